//! loom models of the tracker's protocols: the head-pin/drain handshake between flushers and
//! the ack publication, commit vs flush, remove vs flush, and the staleness races (flush vs
//! eviction, touch vs sweep, down vs flush), with ack readers during them.
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test -p loom-tests --release --test tracker`.
//! Under loom the writer table's first segment holds 2 slots (core/src/tracker/table.rs), so
//! these models allocate as few modelled mutexes as possible.
#![cfg(tidemark_loom)]

use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::thread;
use tidemark::{DownClass, Offset, Tracker, TrackerError, TrackerOptions, WriterStatus};

fn o(tx: u64) -> Offset {
    Offset::new(tx, 0)
}

fn tracker(grace: u64) -> Arc<Tracker> {
    Arc::new(
        Tracker::new(TrackerOptions {
            stall_grace_ms: grace,
            event_capacity: 8,
            ..TrackerOptions::default()
        })
        .unwrap(),
    )
}

/// Two writers pinning consecutive commits report concurrently; a reader checks that any ack it
/// sees is backed by the flush claims made *before* the reports (safety), and acks are
/// monotonic; at the end the ack is the last commit (liveness: no lost drain request).
#[test]
fn two_flushers_race_the_ack_publication() {
    loom::model(|| {
        let t = tracker(60_000);
        let a = t.register().unwrap();
        let b = t.register().unwrap();
        t.commit(o(1), &[a], 0).unwrap();
        t.commit(o(2), &[b], 0).unwrap();
        let claimed_a = Arc::new(AtomicBool::new(false));
        let claimed_b = Arc::new(AtomicBool::new(false));

        let h1 = {
            let (t, c) = (t.clone(), claimed_a.clone());
            thread::spawn(move || {
                c.store(true, Ordering::SeqCst);
                t.flushed(a, o(1), 1).unwrap();
            })
        };
        let h2 = {
            let (t, c) = (t.clone(), claimed_b.clone());
            thread::spawn(move || {
                c.store(true, Ordering::SeqCst);
                t.flushed(b, o(2), 1).unwrap();
            })
        };
        let first = t.ack();
        let second = t.ack();
        assert!(second >= first, "ack moved backwards");
        if second >= Some(1) {
            assert!(claimed_a.load(Ordering::SeqCst), "ack 1 before a flushed");
        }
        if second >= Some(2) {
            assert!(claimed_b.load(Ordering::SeqCst), "ack 2 before b flushed");
        }
        h1.join().unwrap();
        h2.join().unwrap();
        assert_eq!(t.ack(), Some(2));
    });
}

/// The committer makes a writer pending while that writer reports (the report may land before
/// the commit, as a late report, or after it). The final ack matches the writer's state.
#[test]
fn commit_races_a_report_from_the_same_writer() {
    loom::model(|| {
        let t = tracker(60_000);
        let a = t.register().unwrap();
        let b = t.register().unwrap();
        t.commit(o(1), &[b], 0).unwrap();
        let h = {
            let t = t.clone();
            thread::spawn(move || {
                t.commit(o(2), &[a], 0).unwrap();
            })
        };
        t.flushed(a, o(2), 1).unwrap();
        let seen = t.ack();
        assert_eq!(seen, Some(0), "b still owes commit 1");
        t.flushed(b, o(1), 1).unwrap();
        h.join().unwrap();
        let expect = match t.writer_status(a).unwrap() {
            WriterStatus::Pending => Some(1), // a's report came first: it still owes commit 2
            WriterStatus::Idle => Some(2),
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(t.ack(), expect);
    });
}

/// `remove` of the head writer races the next writer's report.
#[test]
fn remove_races_a_flush_report() {
    loom::model(|| {
        let t = tracker(60_000);
        let a = t.register().unwrap();
        let b = t.register().unwrap();
        t.commit(o(1), &[a], 0).unwrap();
        t.commit(o(2), &[b], 0).unwrap();
        let h = {
            let t = t.clone();
            thread::spawn(move || t.remove(a).unwrap())
        };
        t.flushed(b, o(2), 1).unwrap();
        // 1 is possible: the remover's drain saw b unflushed, and our report handed the
        // re-drain to it (election: AGAIN) instead of waiting; the final ack below is exact.
        let mid = t.ack();
        assert!(matches!(mid, Some(0..=2)), "got {mid:?}");
        h.join().unwrap();
        assert_eq!(t.ack(), Some(2));
    });
}

/// A flush report racing a sweep eviction is applied before it (and then nothing is evicted,
/// because it completed the writer) or rejected as evicted — never both.
#[test]
fn flush_races_sweep_eviction() {
    loom::model(|| {
        let t = tracker(10);
        let a = t.register().unwrap();
        t.commit(o(1), &[a], 0).unwrap();
        assert_eq!(t.sweep(11).challenged, 1);
        let h = {
            let t = t.clone();
            thread::spawn(move || t.sweep(12).evicted)
        };
        let flushed = t.flushed(a, o(1), 12);
        let evicted = h.join().unwrap();
        match flushed {
            Ok(()) => {
                assert_eq!(evicted, 0);
                assert_eq!(t.writer_status(a), Ok(WriterStatus::Idle));
            }
            Err(TrackerError::EvictedWriter(_)) => assert_eq!(evicted, 1),
            Err(e) => panic!("unexpected {e}"),
        }
        assert_eq!(t.ack(), Some(1));
    });
}

/// `touch` racing the sweep that would evict: the writer survives iff the touch came first.
#[test]
fn touch_races_sweep() {
    loom::model(|| {
        let t = tracker(10);
        let a = t.register().unwrap();
        t.commit(o(1), &[a], 0).unwrap();
        t.sweep(11);
        let h = {
            let t = t.clone();
            thread::spawn(move || t.sweep(12).evicted)
        };
        let touched = t.touch(a, 12);
        let evicted = h.join().unwrap();
        assert_eq!(touched.is_ok(), evicted == 0);
        assert_eq!(t.ack(), if evicted == 1 { Some(1) } else { Some(0) });
    });
}

/// A crash down racing a flush report: either order ends evicted and unpinned, and the report
/// is either applied or rejected as evicted.
#[test]
fn down_races_flush() {
    loom::model(|| {
        let t = tracker(60_000);
        let a = t.register().unwrap();
        let b = t.register().unwrap();
        t.commit(o(1), &[a, b], 0).unwrap();
        t.flushed(b, o(1), 0).unwrap();
        let h = {
            let t = t.clone();
            thread::spawn(move || t.down(a, DownClass::Crash, 1).unwrap())
        };
        let r = t.flushed(a, o(1), 1);
        assert!(matches!(r, Ok(()) | Err(TrackerError::EvictedWriter(_))));
        h.join().unwrap();
        assert_eq!(
            t.writer_status(a),
            Ok(WriterStatus::Evicted(tidemark::EvictReason::Crashed))
        );
        assert_eq!(t.ack(), Some(1));
    });
}
