//! One interface over tidemark's [`Tracker`] and the [`ElectricTracker`], and the driver loop
//! that feeds either the [`Workload`].

use tidemark::{Offset, Tracker, TrackerOptions, WriterId};

use crate::workload::{Event, LAG, OutOfOrder, Workload, Writers};
use tidemark_testkit::model::ElectricTracker;

/// The caller time (ms) of commit `i`: 128 commits per ms, about 1.3·10⁵ commits/s, inside the
/// 10⁵–10⁶ commits/s docs/CONTRACT.md §3 designs for. Nothing gets near the 60 s grace period.
#[inline]
pub fn now_ms(commit: u64) -> u64 {
    commit >> 7
}

/// A flush tracker the workload can drive. Writers are the workload's indices `0..n`.
pub trait Sink {
    /// A commit with last offset `offset`, delivered to `writers`, at caller time `now`.
    fn commit(&mut self, offset: Offset, writers: &Writers, now: u64);
    /// `writer` reports `offset` flushed at caller time `now`.
    fn flushed(&mut self, writer: u32, offset: Offset, now: u64);
    /// The tracker's current ack.
    fn ack(&self) -> Option<u64>;
}

/// tidemark's [`Tracker`] with `n` writers registered up front, whose ids are contiguous, so a
/// workload index maps to its id by one addition (no lookup table in the measured loop).
#[derive(Debug)]
pub struct TidemarkSink {
    tracker: Tracker,
    base: u64,
    n: u32,
}

impl TidemarkSink {
    /// A tracker with default options sized for `n` writers, all registered.
    pub fn new(n: u32) -> Self {
        Self::with_options(
            n,
            TrackerOptions {
                expected_writers: n as usize,
                ..Default::default()
            },
        )
    }

    /// A tracker built with `options`, then `n` writers registered.
    ///
    /// Panics if the tracker cannot be built or the ids it hands out are not contiguous.
    pub fn with_options(n: u32, options: TrackerOptions) -> Self {
        let tracker = Tracker::new(options).expect("valid tracker options");
        let mut base = 0;
        for i in 0..n as u64 {
            let raw = tracker.register().expect("register").to_raw();
            if i == 0 {
                base = raw;
            }
            assert_eq!(raw, base + i, "a fresh tracker hands out contiguous ids");
        }
        TidemarkSink { tracker, base, n }
    }

    /// The tracker.
    pub fn tracker(&self) -> &Tracker {
        &self.tracker
    }

    /// The id of workload writer `w`.
    #[inline]
    pub fn id(&self, w: u32) -> WriterId {
        debug_assert!(w < self.n);
        WriterId::from_raw(self.base + w as u64)
    }

    /// Maps a commit's workload writers to ids.
    #[inline]
    pub fn ids(&self, writers: &Writers) -> [WriterId; crate::workload::WRITERS_PER_COMMIT] {
        writers.map(|w| self.id(w))
    }
}

impl Sink for TidemarkSink {
    #[inline]
    fn commit(&mut self, offset: Offset, writers: &Writers, now: u64) {
        self.tracker
            .commit(offset, &self.ids(writers), now)
            .expect("commit");
    }

    #[inline]
    fn flushed(&mut self, writer: u32, offset: Offset, now: u64) {
        self.tracker
            .flushed(self.id(writer), offset, now)
            .expect("flushed");
    }

    #[inline]
    fn ack(&self) -> Option<u64> {
        self.tracker.ack()
    }
}

/// The [`ElectricTracker`], keyed by the workload index.
#[derive(Debug, Default)]
pub struct ReferenceSink {
    /// The tracker.
    pub tracker: ElectricTracker,
}

impl ReferenceSink {
    /// An empty reference tracker (it has no registration: writers appear when sent a commit).
    pub fn new() -> Self {
        ReferenceSink {
            tracker: ElectricTracker::new(),
        }
    }
}

impl Sink for ReferenceSink {
    #[inline]
    fn commit(&mut self, offset: Offset, writers: &Writers, _now: u64) {
        self.tracker.commit(offset, &writers.map(u64::from));
    }

    #[inline]
    fn flushed(&mut self, writer: u32, offset: Offset, _now: u64) {
        self.tracker.flushed(writer as u64, offset);
    }

    #[inline]
    fn ack(&self) -> Option<u64> {
        self.tracker.ack()
    }
}

/// Drives `commits` steps of `workload` into `sink` (flush reports due, then the commit).
#[inline]
pub fn run<S: Sink>(workload: &mut Workload, sink: &mut S, commits: u64) {
    for _ in 0..commits {
        let now = now_ms(workload.commits());
        let step = workload.step();
        if let Some((offset, writers)) = step.flush {
            for w in writers {
                sink.flushed(w, offset, now);
            }
        }
        sink.commit(step.commit.0, &step.commit.1, now);
    }
}

/// Feeds events of the out-of-order workload into `sink` (caller time from the commit order).
#[inline]
pub fn replay<S: Sink>(events: &[Event], sink: &mut S) {
    let mut now = 0;
    for e in events {
        match *e {
            Event::Commit(offset, ref writers) => {
                now = now_ms(offset.tx);
                sink.commit(offset, writers, now);
            }
            Event::Flushed(w, offset) => sink.flushed(w, offset, now),
        }
    }
}

/// Runs `commits` commits of the out-of-order workload into `sink` (events generated first).
pub fn run_out_of_order<S: Sink>(workload: &mut OutOfOrder, sink: &mut S, commits: u64) {
    let mut events = Vec::new();
    workload.generate(commits, &mut events);
    replay(&events, sink);
}

/// Brings `sink` to the steady state: [`LAG`] commits in flight, then `extra` more commits so
/// caches and allocations settle.
pub fn warm_up<S: Sink>(workload: &mut Workload, sink: &mut S, extra: u64) {
    run(workload, sink, LAG as u64 + extra);
}

/// Lets every writer catch up: delivers the flush reports still owed by the last [`LAG`]
/// commits. Afterwards nothing is pending.
pub fn drain<S: Sink>(workload: &Workload, sink: &mut S) {
    let now = now_ms(workload.commits());
    for (offset, writers) in workload.in_flight() {
        for w in writers {
            sink.flushed(w, offset, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both trackers reach the same final ack, and tidemark's is never below the reference's
    /// (docs/CONTRACT.md §3) along the way.
    #[test]
    fn tidemark_never_below_reference_and_both_catch_up() {
        for n in [4, 16, 1000] {
            let (mut wt, mut wr) = (Workload::new(n, 3), Workload::new(n, 3));
            let (mut t, mut r) = (TidemarkSink::new(n), ReferenceSink::new());
            for _ in 0..2000 {
                run(&mut wt, &mut t, 1);
                run(&mut wr, &mut r, 1);
                assert!(t.ack() >= r.ack(), "n={n}: {:?} < {:?}", t.ack(), r.ack());
            }
            drain(&wt, &mut t);
            drain(&wr, &mut r);
            assert_eq!(t.ack(), Some(2000));
            assert_eq!(r.ack(), Some(2000));
            assert_eq!(r.tracker.pending(), 0);
        }
    }
}
