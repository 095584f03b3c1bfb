//! The stories of docs/CONTRACT.md §1 and the scenarios, step by step.

use std::sync::Arc;
use std::time::Duration;

use tidemark::{
    DownClass, Event, EvictReason, Offset, Tracker, TrackerError, TrackerOptions, WriterStatus,
};

fn o(tx: u64, op: u64) -> Offset {
    Offset::new(tx, op)
}

fn tracker(grace: u64) -> Tracker {
    Tracker::new(TrackerOptions {
        stall_grace_ms: grace,
        ..TrackerOptions::default()
    })
    .unwrap()
}

fn events(t: &Tracker) -> Vec<Event> {
    let mut v = Vec::new();
    t.take_events(&mut v, usize::MAX);
    v
}

#[test]
fn sparse_deliveries_are_exact() {
    // docs/CONTRACT.md §3: w flushed commit 5, still owes commit 1000, commits 6–999 went to
    // others.
    let t = Tracker::default();
    let w = t.register().unwrap();
    let other = t.register().unwrap();
    t.commit(o(5, 0), &[w], 0).unwrap();
    for tx in 6..1000 {
        t.commit(o(tx, 0), &[other], 0).unwrap();
        t.flushed(other, o(tx, 0), 0).unwrap();
    }
    t.commit(o(1000, 0), &[w], 0).unwrap();
    t.flushed(w, o(5, 0), 0).unwrap();
    assert_eq!(t.ack(), Some(999), "a per-writer minimum would say 4 or 5");
    t.flushed(w, o(1000, 0), 0).unwrap();
    assert_eq!(t.ack(), Some(1000));
}

#[test]
fn no_writers_advances_at_once_and_initial_ack_is_a_floor() {
    let t = Tracker::new(TrackerOptions {
        initial_ack: Some(41),
        ..TrackerOptions::default()
    })
    .unwrap();
    assert_eq!(t.ack(), Some(41));
    assert_eq!(
        t.commit(o(41, 0), &[], 0),
        Err(TrackerError::OffsetRegressed {
            last: 41,
            offered: 41
        })
    );
    t.commit(o(42, 9), &[], 0).unwrap();
    assert_eq!(t.ack(), Some(42));
}

#[test]
fn rejected_calls_change_nothing() {
    let t = Tracker::default();
    let a = t.register().unwrap();
    let b = t.register().unwrap();
    t.commit(o(10, 0), &[a], 0).unwrap();
    let before = t.stats(0);
    assert!(matches!(
        t.commit(o(10, 1), &[b], 0),
        Err(TrackerError::OffsetRegressed { .. })
    ));
    t.unregister(b).unwrap();
    // A stale id fails the whole commit; `a` must not have received commit 11.
    assert_eq!(
        t.commit(o(11, 0), &[a, b], 0),
        Err(TrackerError::UnknownWriter(b))
    );
    let after = t.stats(0);
    assert_eq!(before.last_seen, after.last_seen);
    assert_eq!(before.commits, after.commits);
    t.flushed(a, o(10, 0), 0).unwrap();
    assert_eq!(t.ack(), Some(10), "a completed: it never owed commit 11");
    // A new writer in b's slot does not alias the stale id.
    let c = t.register().unwrap();
    assert_eq!(c.index(), b.index());
    assert_ne!(c, b);
    assert_eq!(
        t.flushed(b, o(1, 0), 0),
        Err(TrackerError::UnknownWriter(b))
    );
    assert_eq!(
        t.flushed(tidemark::WriterId::from_raw(u64::MAX - 7), o(1, 0), 0),
        Err(TrackerError::UnknownWriter(tidemark::WriterId::from_raw(
            u64::MAX - 7
        )))
    );
}

#[test]
fn capacity_is_enforced_and_freed_by_unregister() {
    let t = Tracker::new(TrackerOptions {
        max_writers: 2,
        ..TrackerOptions::default()
    })
    .unwrap();
    let a = t.register().unwrap();
    let _b = t.register().unwrap();
    assert_eq!(
        t.register(),
        Err(TrackerError::CapacityExceeded { max_writers: 2 })
    );
    t.unregister(a).unwrap();
    t.register().unwrap();
    assert!(
        Tracker::new(TrackerOptions {
            max_writers: 0,
            ..TrackerOptions::default()
        })
        .is_err()
    );
}

#[test]
fn killed_writer_is_evicted_by_a_sweep_past_grace() {
    let t = tracker(1_000);
    let (a, b) = (t.register().unwrap(), t.register().unwrap());
    t.commit(o(7, 2), &[a, b], 100).unwrap();
    t.flushed(a, o(7, 2), 150).unwrap();
    t.down(b, DownClass::Teardown, 200).unwrap();
    assert_eq!(t.ack(), Some(6), "teardown keeps it pinned");
    assert_eq!(t.sweep(1_100).evicted, 0, "exactly at grace is not past it");
    assert_eq!(t.ack(), Some(6));
    let pin = t.pinning(1_100).unwrap();
    assert_eq!(pin.writer, b);
    assert!(pin.orphaned);
    assert_eq!(pin.ms_since_progress, 1_000);
    let out = t.sweep(1_101);
    assert_eq!(
        (out.challenged, out.evicted),
        (0, 1),
        "orphans skip the challenge"
    );
    assert_eq!(t.ack(), Some(7));
    assert_eq!(events(&t), vec![Event::Evicted(b, EvictReason::Orphaned)]);
    assert_eq!(
        t.flushed(b, o(7, 2), 1_200),
        Err(TrackerError::EvictedWriter(b))
    );
    assert_eq!(
        t.writer_status(b),
        Ok(WriterStatus::Evicted(EvictReason::Orphaned))
    );
    assert_eq!(t.stats(1_200).evicted_orphaned, 1);
}

#[test]
fn wedged_writer_is_challenged_then_evicted_and_touch_saves_it() {
    let t = tracker(1_000);
    let (w, healthy, wedged) = (
        t.register().unwrap(),
        t.register().unwrap(),
        t.register().unwrap(),
    );
    t.commit(o(1, 0), &[w, healthy, wedged], 0).unwrap();
    t.commit(o(2, 0), &[w, wedged], 500).unwrap(); // new commits do not refresh progress
    t.flushed(healthy, o(1, 0), 10).unwrap();
    assert_eq!(t.sweep(1_001).challenged, 2);
    assert_eq!(
        events(&t),
        vec![Event::Challenged(w), Event::Challenged(wedged)]
    );
    t.touch(w, 1_002).unwrap(); // w answers: deferring on purpose
    let out = t.sweep(1_050);
    assert_eq!((out.challenged, out.evicted), (0, 1));
    assert_eq!(
        events(&t),
        vec![Event::Evicted(wedged, EvictReason::Stalled)]
    );
    assert_eq!(t.ack(), Some(0), "w still owes commit 1");
    // w stalls again: challenged again, not evicted.
    assert_eq!(t.sweep(2_003).challenged, 1);
    assert_eq!(events(&t), vec![Event::Challenged(w)]);
    // Flush progress also answers.
    t.flushed(w, o(1, 0), 2_100).unwrap();
    assert_eq!(t.ack(), Some(1));
    assert_eq!(t.sweep(2_200), Default::default());
    t.flushed(w, o(2, 0), 2_300).unwrap();
    assert_eq!(t.ack(), Some(2));
    let s = t.stats(2_300);
    assert_eq!((s.challenges, s.evicted_stalled, s.pending), (3, 1, 0));
}

#[test]
fn crash_unpins_at_once_cleanup_reports_removed() {
    let t = tracker(60_000);
    let (a, b, c) = (
        t.register().unwrap(),
        t.register().unwrap(),
        t.register().unwrap(),
    );
    t.commit(o(3, 0), &[a, b, c], 0).unwrap();
    t.flushed(c, o(3, 0), 0).unwrap();
    t.down(a, DownClass::Crash, 1).unwrap();
    assert_eq!(t.ack(), Some(2));
    t.down(b, DownClass::Cleanup, 1).unwrap();
    assert_eq!(t.ack(), Some(3));
    assert_eq!(
        events(&t),
        vec![Event::Evicted(a, EvictReason::Crashed), Event::Removed(b)]
    );
    assert_eq!(
        t.down(a, DownClass::Crash, 2),
        Err(TrackerError::EvictedWriter(a))
    );
    // b stays registered after a cleanup and can be sent more work.
    t.commit(o(4, 0), &[b], 2).unwrap();
    assert_eq!(t.ack(), Some(3));
    t.unregister(a).unwrap();
}

#[test]
fn mass_teardown_evicts_nothing_before_grace() {
    let t = tracker(5_000);
    let ws: Vec<_> = (0..500).map(|_| t.register().unwrap()).collect();
    t.commit(o(1, 0), &ws, 0).unwrap();
    for &w in &ws {
        t.down(w, DownClass::Teardown, 10).unwrap();
    }
    for now in (0..=5_000).step_by(250) {
        assert_eq!(t.sweep(now), Default::default(), "at {now}");
    }
    assert_eq!(t.ack(), Some(0));
    assert_eq!(t.sweep(5_001).evicted, 500);
    assert_eq!(t.ack(), Some(1));
}

#[test]
fn paused_writer_is_never_evicted_and_resume_rearms() {
    let t = tracker(100);
    let w = t.register().unwrap();
    t.commit(o(1, 0), &[w], 0).unwrap();
    t.pause(w).unwrap();
    for now in (0..10_000).step_by(77) {
        assert_eq!(t.sweep(now), Default::default());
    }
    assert!(t.stalled(10_000).is_empty());
    t.resume(w, 10_000).unwrap();
    assert_eq!(t.sweep(10_100), Default::default());
    assert_eq!(t.stalled(10_101), vec![w]);
    assert_eq!(t.sweep(10_101).challenged, 1);
    assert_eq!(t.sweep(10_102).evicted, 1);
}

#[test]
fn event_overflow_keeps_evictions() {
    let t = Tracker::new(TrackerOptions {
        stall_grace_ms: 10,
        event_capacity: 4,
        ..TrackerOptions::default()
    })
    .unwrap();
    let ws: Vec<_> = (0..10).map(|_| t.register().unwrap()).collect();
    t.commit(o(1, 0), &ws, 0).unwrap();
    assert_eq!(t.sweep(11).challenged, 10);
    assert_eq!(t.sweep(12).evicted, 10);
    let got = events(&t);
    let evictions = got
        .iter()
        .filter(|e| matches!(e, Event::Evicted(..)))
        .count();
    assert_eq!(evictions, 10);
    assert_eq!(got.len(), 14);
    assert_eq!(t.stats(12).events_dropped, 6);
}

#[test]
fn flush_racing_eviction_is_one_or_the_other() {
    // Applied before: completes the writer, the sweep then has nothing to evict.
    let t = tracker(10);
    let w = t.register().unwrap();
    t.commit(o(1, 0), &[w], 0).unwrap();
    t.sweep(11);
    t.flushed(w, o(1, 0), 11).unwrap();
    assert_eq!(t.sweep(30), Default::default());
    assert_eq!(t.writer_status(w), Ok(WriterStatus::Idle));
    // Eviction first: the report is rejected, never both.
    let w2 = t.register().unwrap();
    t.commit(o(2, 0), &[w2], 100).unwrap();
    t.sweep(111);
    assert_eq!(t.sweep(112).evicted, 1);
    assert_eq!(
        t.flushed(w2, o(2, 0), 113),
        Err(TrackerError::EvictedWriter(w2))
    );
}

#[test]
fn wait_ack_wakes_without_spinning() {
    let t = Arc::new(Tracker::default());
    let w = t.register().unwrap();
    t.commit(o(5, 0), &[w], 0).unwrap();
    assert_eq!(t.wait_ack(None, Duration::from_millis(20)), Some(4));
    assert_eq!(t.wait_ack(Some(4), Duration::from_millis(20)), None);
    let before = t.ack_generation();
    let t2 = Arc::clone(&t);
    let h = std::thread::spawn(move || t2.wait_ack(Some(4), Duration::from_secs(30)));
    std::thread::sleep(Duration::from_millis(20));
    t.flushed(w, o(5, 0), 1).unwrap();
    assert_eq!(h.join().unwrap(), Some(5));
    assert!(t.ack_generation() > before);
}

#[test]
fn log_memory_follows_unflushed_deliveries_while_pinned() {
    let t = Tracker::default();
    let stuck = t.register().unwrap();
    let busy: Vec<_> = (0..8).map(|_| t.register().unwrap()).collect();
    t.commit(o(1, 0), &[stuck], 0).unwrap();
    let mut peak = 0;
    for tx in 2..200_000u64 {
        let w = busy[(tx % 8) as usize];
        t.commit(o(tx, 0), &[w], 0).unwrap();
        t.flushed(w, o(tx, 0), 0).unwrap();
        peak = peak.max(t.memory_bytes());
    }
    assert_eq!(t.ack(), Some(0));
    // 200k deliveries of 24 bytes would be 4.8 MB; compaction keeps the log near its floor.
    assert!(peak < 1_000_000, "peak {peak} bytes");
    t.remove(stuck).unwrap();
    // The release pops what compaction left behind the head in budgeted steps: the removal
    // itself examined at most the budget, and the backlog finishes through `run_backlog`.
    let work = t.work_stats();
    assert!(work.max_call_work <= work.budget, "{work:?}");
    while t.run_backlog() {}
    assert_eq!(t.ack(), Some(199_999));
    assert!(t.work_stats().max_call_work <= work.budget);
}

#[test]
fn pinning_and_stats_describe_the_holder() {
    let t = tracker(60_000);
    let (a, b) = (t.register().unwrap(), t.register().unwrap());
    t.commit(o(1, 0), &[a], 100).unwrap();
    t.commit(o(2, 5), &[a, b], 200).unwrap();
    t.flushed(a, o(1, 0), 300).unwrap();
    let p = t.pinning(1_000).unwrap();
    assert_eq!((p.writer, p.owes), (a, o(2, 5)));
    assert_eq!(p.flushed, Some(o(1, 0)));
    assert_eq!(p.ms_since_progress, 700);
    let s = t.stats(1_000);
    assert_eq!(s.ack, Some(1));
    assert_eq!(s.ack_lag, Some(1));
    assert_eq!(s.pending, 2);
    assert_eq!(
        s.oldest_progress_age_ms,
        Some(800),
        "b became pending at 200"
    );
    assert_eq!((s.commits, s.flushes, s.registered), (2, 1, 2));
}

/// A huge `wait_ack` timeout saturates instead of overflowing `Instant + Duration` (a panic).
#[test]
fn wait_ack_with_a_huge_timeout_does_not_panic() {
    let t = tracker(60_000);
    let w = t.register().unwrap();
    t.commit(o(5, 0), &[w], 0).unwrap();
    assert_eq!(t.wait_ack(None, Duration::MAX), Some(4));
    let t = Arc::new(t);
    let waiter = {
        let t = Arc::clone(&t);
        std::thread::spawn(move || t.wait_ack(Some(4), Duration::MAX))
    };
    t.flushed(w, o(5, 0), 1).unwrap();
    assert_eq!(waiter.join().unwrap(), Some(5));
}

/// A huge `expected_writers` is either allocated (lazily, by the OS) or refused with
/// `OutOfMemory`: never an abort of the host.
#[test]
fn huge_expected_writers_is_refused_or_allocated_never_an_abort() {
    let r = Tracker::new(TrackerOptions {
        expected_writers: (u32::MAX - 1) as usize,
        max_writers: (u32::MAX - 1) as usize,
        ..TrackerOptions::default()
    });
    match r {
        Ok(t) => assert!(t.memory_bytes() >= 16 * (u32::MAX as usize - 1)),
        Err(e) => assert!(matches!(e, TrackerError::OutOfMemory { .. }), "{e:?}"),
    }
}

/// A call that releases the pinned head drains within one budget, whatever ends the stint
/// (report, remove, crash down, unregister, sweep eviction): it does not also help the backlog
/// it left, so its work (counted, not timed) stays within the budget.
#[test]
fn releasing_the_head_costs_one_budget_per_call() {
    const BUDGET: usize = 16;
    type End = fn(&Tracker, tidemark::WriterId);
    let ends: [(&str, End); 5] = [
        ("flushed", |t, w| t.flushed(w, o(1, 0), 0).unwrap()),
        ("remove", |t, w| t.remove(w).unwrap()),
        ("down crash", |t, w| t.down(w, DownClass::Crash, 0).unwrap()),
        ("unregister", |t, w| t.unregister(w).unwrap()),
        ("sweep", |t, _| {
            t.sweep(1_000); // challenge
            assert_eq!(t.sweep(2_000).evicted, 1);
        }),
    ];
    for (name, end) in ends {
        let t = tracker(100);
        t.set_call_budget(BUDGET);
        let pinner = t.register().unwrap();
        let other = t.register().unwrap();
        t.commit(o(1, 0), &[pinner], 0).unwrap();
        for tx in 2..=1_000 {
            t.commit(o(tx, 0), &[other], 0).unwrap();
            t.flushed(other, o(tx, 0), 0).unwrap();
        }
        assert_eq!(t.ack(), Some(0), "{name}");
        // Keep `other` fresh so only the pinner is stale for the sweep.
        t.commit(o(1_001, 0), &[other], 2_000).unwrap();
        let work = |t: &Tracker| {
            let w = t.work_stats();
            w.deliveries_popped + w.entries_scanned
        };
        let before = work(&t);
        end(&t, pinner);
        let spent = work(&t) - before;
        assert!(
            spent <= BUDGET as u64,
            "{name}: one call examined {spent} deliveries"
        );
        assert!(t.has_backlog(), "{name}: the release leaves a backlog");
        while t.run_backlog() {}
        assert_eq!(t.ack(), Some(1_000), "{name}");
    }
}
