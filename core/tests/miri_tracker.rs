//! Tracker paths through the unsafe segmented tables and the chunked delivery log, small
//! enough for miri (`scripts/miri.sh`): writer-table growth across segments (64, 64, 128, …
//! slots) with slot reuse, log chunks (128 deliveries each) filled, drained, compacted and
//! recycled, and a committer racing two flushers. They also run under plain `cargo test`;
//! sizes shrink under `cfg(miri)` only.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use tidemark::{Offset, Tracker, TrackerOptions, WriterId};
use tidemark_testkit::model::ExactModel;

/// Writers registered: past the third segment boundary (64 + 64 + 128).
const WRITERS: usize = if cfg!(miri) { 260 } else { 2_000 };
/// Commits: several 128-delivery log chunks.
const COMMITS: u64 = if cfg!(miri) { 300 } else { 20_000 };
/// Commits of the second round, on recycled chunks.
const ROUND2: u64 = if cfg!(miri) { 150 } else { 2_000 };

#[test]
fn writer_table_grows_across_segments_and_reuses_slots() {
    let t = Tracker::default();
    let mut m = ExactModel::new(None, 60_000);
    let mut ids: Vec<WriterId> = (0..WRITERS)
        .map(|_| {
            let w = t.register().unwrap();
            assert_eq!(w, m.register());
            w
        })
        .collect();
    // Every segment is used: one commit to a writer in each, flushed back to front.
    let picks: Vec<WriterId> = [0, 63, 64, 127, 128, 255, WRITERS - 1]
        .iter()
        .map(|&i| ids[i])
        .collect();
    t.commit(Offset::new(1, 0), &picks, 0).unwrap();
    m.commit(Offset::new(1, 0), &picks, 0).unwrap();
    for &w in picks.iter().rev() {
        assert_eq!(t.ack(), m.ack());
        t.flushed(w, Offset::new(1, 0), 1).unwrap();
        m.flushed(w, Offset::new(1, 0), 1).unwrap();
    }
    assert_eq!(t.ack(), Some(1));
    // Unregister every other writer, register again: the freed slots (in every segment) are
    // reused with a new generation, and the stale ids are refused.
    for w in ids.iter().step_by(2) {
        t.unregister(*w).unwrap();
        m.unregister(*w).unwrap();
    }
    for w in ids.iter().step_by(2) {
        assert!(t.flushed(*w, Offset::new(1, 0), 2).is_err(), "stale id");
    }
    for i in (0..ids.len()).step_by(2) {
        let w = t.register().unwrap();
        assert_eq!(w, m.register());
        ids[i] = w;
    }
    t.commit(Offset::new(2, 0), &ids[..8], 3).unwrap();
    m.commit(Offset::new(2, 0), &ids[..8], 3).unwrap();
    for &w in &ids[..8] {
        t.flushed(w, Offset::new(2, 0), 4).unwrap();
    }
    assert_eq!(t.ack(), Some(2));
}

#[test]
fn log_chunks_fill_drain_compact_and_recycle() {
    // A pinned head (writer 0 owes the first commit) while the rest flush: the log keeps
    // growing by chunks and compaction squeezes the done deliveries out; releasing the head
    // drains it all; then the emptied chunks are reused.
    let t = Tracker::default();
    t.set_call_budget(64); // several budgeted steps per release
    let ws: Vec<WriterId> = (0..4).map(|_| t.register().unwrap()).collect();
    t.commit(Offset::new(1, 0), &ws[..1], 0).unwrap();
    for tx in 2..COMMITS {
        let w = ws[1 + (tx as usize % 3)];
        t.commit(Offset::new(tx, 0), &[w, ws[(tx as usize + 1) % 3 + 1]], tx)
            .unwrap();
        if tx % 3 == 0 {
            // Out of order across writers: each flushes what it was sent so far.
            for &w in &ws[1..] {
                t.flushed(w, Offset::new(tx, 0), tx).unwrap();
            }
        }
        assert_eq!(t.ack(), Some(0), "pinned by writer 0");
    }
    for &w in &ws[1..] {
        t.flushed(w, Offset::new(COMMITS, 0), COMMITS).unwrap();
    }
    t.flushed(ws[0], Offset::new(1, 0), COMMITS).unwrap();
    while t.run_backlog() {}
    assert_eq!(t.ack(), Some(COMMITS - 1));
    // The recycled chunks carry a second round.
    for tx in COMMITS..COMMITS + ROUND2 {
        t.commit(Offset::new(tx, 0), &ws[..2], tx).unwrap();
        t.flushed(ws[(tx % 2) as usize], Offset::new(tx, 0), tx)
            .unwrap();
        t.flushed(ws[1 - (tx % 2) as usize], Offset::new(tx, 0), tx)
            .unwrap();
    }
    while t.run_backlog() {}
    assert_eq!(t.ack(), Some(COMMITS + ROUND2 - 1));
}

#[test]
fn a_committer_and_two_flushers_race() {
    let commits: u64 = if cfg!(miri) { 120 } else { 20_000 };
    let t = Arc::new(Tracker::new(TrackerOptions::default()).unwrap());
    let ws: Vec<WriterId> = (0..4).map(|_| t.register().unwrap()).collect();
    let done = Arc::new(AtomicBool::new(false));
    let flushers: Vec<_> = (0..2)
        .map(|k| {
            let (t, done) = (Arc::clone(&t), Arc::clone(&done));
            let mine = [ws[k * 2], ws[k * 2 + 1]];
            thread::spawn(move || {
                let mut last = 0;
                loop {
                    let finished = done.load(Ordering::Acquire);
                    let seen = t.last_seen().map_or(0, |o| o.tx);
                    if seen > last {
                        for &w in &mine {
                            t.flushed(w, Offset::new(seen, 0), seen).unwrap();
                        }
                        last = seen;
                    }
                    if finished && last == commits {
                        break;
                    }
                    thread::yield_now();
                }
            })
        })
        .collect();
    let mut prev = None;
    for tx in 1..=commits {
        t.commit(Offset::new(tx, 0), &ws, tx).unwrap();
        let ack = t.ack();
        assert!(ack >= prev && ack.is_none_or(|a| a < tx + 1));
        prev = ack;
    }
    done.store(true, Ordering::Release);
    for f in flushers {
        f.join().unwrap();
    }
    while t.run_backlog() {}
    assert_eq!(t.ack(), Some(commits));
}
