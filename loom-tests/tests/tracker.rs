//! loom models of the tracker's protocols, on the real code: the drain-token hand-over through
//! the parked entry (`HEAD`) and the ack publication, commit vs flush (extend vs complete),
//! partial progress, a budgeted drain continued by another thread, compaction racing a flush,
//! eviction racing a drain, the `wait_ack` wake-up (a real condition-variable wait), and the
//! staleness races (flush vs eviction, touch vs sweep, pause vs sweep, down vs flush), with ack
//! readers during them.
//!
//! Run: `RUSTFLAGS="--cfg tidemark_loom" LOOM_MAX_PREEMPTIONS=3 cargo test -p loom-tests
//! --release --test tracker`. Under loom the core shrinks its tables (2 cells, 2 entries and 2
//! deliveries per chunk per segment), the per-call budget (3) and the compaction threshold (2),
//! so small models cross every boundary.
#![cfg(tidemark_loom)]

use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::thread;
use tidemark::{DownClass, Offset, Tracker, TrackerError, TrackerOptions, WriterId, WriterStatus};

fn o(tx: u64) -> Offset {
    Offset::new(tx, 0)
}

/// A model builder with its own preemption bound (for models whose threads run long paths).
fn bounded(preemptions: usize) -> loom::model::Builder {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(preemptions);
    b
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

/// A tracker with two writers: `a` owes commit 1, `b` owes commit 2 (the ack is 0).
fn a_owes_1_b_owes_2() -> (Arc<Tracker>, WriterId, WriterId) {
    let t = tracker(60_000);
    let a = t.register().unwrap();
    let b = t.register().unwrap();
    t.commit(o(1), &[a], 0).unwrap();
    t.commit(o(2), &[b], 0).unwrap();
    (t, a, b)
}

/// Two writers pinning consecutive commits report concurrently; a reader checks that any ack it
/// sees is backed by the flush claims made *before* the reports (safety), and acks are
/// monotonic; at the end the ack is the last commit (liveness: no lost drain request).
#[test]
fn two_flushers_race_the_ack_publication() {
    loom::model(|| {
        let (t, a, b) = a_owes_1_b_owes_2();
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
        let (t, a, b) = a_owes_1_b_owes_2();
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

/// The committer delivers a second commit to `a` while `a` reports partial progress (a report
/// that covers its first delivery but not the second); `b` completes afterwards, and the ack
/// read then is checked against the claims made before it.
#[test]
fn committer_and_a_flusher_with_partial_progress() {
    // The committer (this thread, which then reports for `b` and reads the ack) races `a`'s
    // report: the extend, partial-progress and completion CASes on `a`'s entry interleave
    // with the commit's delivery; `b`'s completion then releases what `a` no longer owes.
    bounded(3).check(|| {
        let (t, a, b) = a_owes_1_b_owes_2();
        let claimed_a1 = Arc::new(AtomicBool::new(false));
        let fa = {
            let (t, c) = (t.clone(), claimed_a1.clone());
            thread::spawn(move || {
                c.store(true, Ordering::SeqCst);
                // Covers commit 1; commit 3 (if already delivered) stays owed.
                t.flushed(a, o(1), 1).unwrap();
            })
        };
        t.commit(o(3), &[a], 0).unwrap();
        t.flushed(b, o(2), 1).unwrap();
        let seen = t.ack();
        if seen >= Some(1) {
            assert!(
                claimed_a1.load(Ordering::SeqCst),
                "ack {seen:?} before a flushed 1"
            );
        }
        assert!(seen <= Some(2), "ack {seen:?} passed commit 3");
        fa.join().unwrap();
        while t.run_backlog() {}
        // Commit 3 is owed by `a` unless its report landed before the delivery (then the
        // report completed the first stint and commit 3 started a new one): either way 3 is
        // owed, so the exact ack is 2.
        assert_eq!(t.ack(), Some(2));
        assert_eq!(t.writer_status(a), Ok(WriterStatus::Pending));
        t.flushed(a, o(3), 2).unwrap();
        assert_eq!(t.ack(), Some(3));
    });
}

/// A budget of one delivery per call: the release of the head leaves a backlog that another
/// thread's ordinary call continues; the ack stays safe throughout and ends exact.
#[test]
fn budgeted_drain_continued_by_another_thread() {
    loom::model(|| {
        let t = tracker(60_000);
        t.set_call_budget(1);
        let a = t.register().unwrap();
        let b = t.register().unwrap();
        t.commit(o(1), &[a], 0).unwrap();
        t.commit(o(2), &[b], 0).unwrap();
        t.commit(o(3), &[b], 0).unwrap();
        t.flushed(b, o(3), 1).unwrap(); // b done: its deliveries wait behind a's
        let released = Arc::new(AtomicBool::new(false));
        let h = {
            let (t, r) = (t.clone(), released.clone());
            thread::spawn(move || {
                r.store(true, Ordering::SeqCst);
                t.flushed(a, o(1), 2).unwrap();
            })
        };
        // Ordinary traffic from this thread: a late report (b is idle) helps the backlog.
        t.flushed(b, o(3), 2).unwrap();
        let seen = t.ack();
        // Whatever `pinning` names now is a head the ack has not passed.
        if let Some(p) = t.pinning(0) {
            assert!(
                seen < Some(p.owes.tx),
                "stale head {p:?} after ack {seen:?}"
            );
        }
        if seen >= Some(1) {
            assert!(
                released.load(Ordering::SeqCst),
                "ack {seen:?} before a flushed"
            );
        }
        h.join().unwrap();
        let w = t.work_stats();
        assert!(w.max_call_work <= 1, "{w:?}");
        while t.run_backlog() {}
        assert_eq!(t.ack(), Some(3));
        assert!(t.work_stats().max_call_work <= 1);
    });
}

/// Compaction (driven by commits while the head is pinned) races a flush of a delivery it is
/// filtering; then the head is released. Nothing done is kept forever, nothing owed is
/// dropped: the final ack is exact.
#[test]
fn compaction_races_a_flush() {
    loom::model(|| {
        let t = tracker(60_000);
        let stuck = t.register().unwrap();
        let w = t.register().unwrap();
        t.commit(o(1), &[stuck], 0).unwrap();
        // Under loom a chunk holds 2 deliveries and compaction starts above 2: these fill
        // sealed chunks behind the pinned head.
        for tx in 2..=5 {
            t.commit(o(tx), &[w], 0).unwrap();
        }
        let h = {
            let t = t.clone();
            thread::spawn(move || t.flushed(w, o(5), 1).unwrap())
        };
        // Each commit drives one compaction step.
        t.commit(o(6), &[stuck], 0).unwrap();
        while t.run_backlog() {}
        h.join().unwrap();
        assert_eq!(t.ack(), Some(0), "stuck pins commit 1");
        t.flushed(stuck, o(6), 2).unwrap();
        while t.run_backlog() {}
        assert_eq!(t.ack(), Some(6));
    });
}

/// A crash eviction of the head writer races a drain started by another writer's report.
#[test]
fn eviction_races_a_drain() {
    loom::model(|| {
        let t = tracker(60_000);
        let a = t.register().unwrap();
        let b = t.register().unwrap();
        t.commit(o(1), &[a, b], 0).unwrap();
        t.commit(o(2), &[b], 0).unwrap();
        let h = {
            let t = t.clone();
            thread::spawn(move || t.down(a, DownClass::Crash, 1).unwrap())
        };
        t.flushed(b, o(2), 1).unwrap();
        let mid = t.ack();
        assert!(matches!(mid, Some(0..=2)), "got {mid:?}");
        h.join().unwrap();
        while t.run_backlog() {}
        assert_eq!(t.ack(), Some(2));
        let mut events = Vec::new();
        t.take_events(&mut events, 8);
        assert_eq!(
            events,
            vec![tidemark::Event::Evicted(a, tidemark::EvictReason::Crashed)]
        );
    });
}

/// `wait_ack` parks on the condition variable (a real wait under loom): the flush that moves
/// the ack must wake it, whichever order the registration and the publication take.
#[test]
fn wait_ack_is_woken_by_the_publication() {
    loom::model(|| {
        let t = tracker(60_000);
        let a = t.register().unwrap();
        t.commit(o(1), &[a], 0).unwrap();
        let waiter = {
            let t = t.clone();
            thread::spawn(move || t.wait_ack(Some(0), std::time::Duration::from_secs(60)))
        };
        t.flushed(a, o(1), 1).unwrap();
        assert_eq!(waiter.join().unwrap(), Some(1));
    });
}

/// `pause` racing the sweep that would evict: a paused writer is never evicted, and a writer
/// evicted first makes the pause fail.
#[test]
fn pause_races_sweep() {
    loom::model(|| {
        let t = tracker(10);
        let a = t.register().unwrap();
        t.commit(o(1), &[a], 0).unwrap();
        t.sweep(11);
        let h = {
            let t = t.clone();
            thread::spawn(move || t.sweep(12).evicted)
        };
        let paused = t.pause(a);
        let evicted = h.join().unwrap();
        assert_eq!(paused.is_ok(), evicted == 0, "{paused:?} / {evicted}");
    });
}
