//! The reference algorithm: Electric's FlushTracker (docs/CONTRACT.md §3 "Reference algorithm"), in
//! Rust, as the baseline of the tracker benchmarks.
//!
//! State: `last_seen` (the last commit's offset), `global` (starts at `(−1, 0)`), a map
//! writer → `(last_sent, flushed)` of pending writers (a `HashMap` with std's default hasher)
//! and an ordered index of the pending writers by `flushed` (a `BTreeSet` of
//! `(flushed, writer)`).
//!
//! - **Commit** at `(T, op)`: a writer not in the map enters with `flushed = (T − 1, 0)`; one
//!   already in it gets `last_sent = (T, op)`. Then `last_seen = (T, op)`, and if the map is
//!   (still) empty, recompute.
//! - **Flush report**: ignored if the writer is not in the map; if the report is at or beyond
//!   `last_sent` the writer leaves the map, otherwise `flushed = report` (no max: a lower report
//!   moves it back, as in the original). Then recompute.
//! - **Remove**: the writer leaves the map; recompute.
//! - **Recompute**: map empty → `global = last_seen`, notify `last_seen.tx`; otherwise
//!   `global = max(global, min flushed)` and, if that changed `global`, notify `global.tx − 1`.
//!   Notified values below 0 mean "nothing yet".
//!
//! Deviation from the original, documented: Electric leaves the map only when the report is
//! *equal* to `last_sent`; here a report beyond `last_sent` completes the writer too (tidemark's
//! contract, and the only sensible reading of a report past everything delivered).
//!
//! Like the original it notifies duplicates, can notify −1 at start-up, lags by one commit while
//! a new writer (at its artificial `(T − 1, 0)`) is the minimum, and moves backwards after
//! replays; [`ReferenceTracker::ack`] reports the last notified value as is, without repairing
//! any of that.

use std::collections::{BTreeSet, HashMap};

use tidemark::Offset;

/// An offset whose `tx` may be −1, as the reference's `global` starts at `(−1, 0)` and a new
/// writer at tx 0 enters with `flushed = (−1, 0)`. Ordered by `tx`, then `op`.
pub type RefOffset = (i64, u64);

fn widen(o: Offset) -> RefOffset {
    (o.tx as i64, o.op)
}

/// One pending writer's entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    last_sent: RefOffset,
    flushed: RefOffset,
}

/// Electric's FlushTracker (see the module docs). Writers are keyed by any `u64` (the benches
/// use tidemark's raw [`WriterId`](tidemark::WriterId) values, so both trackers see the same
/// keys). Single-threaded; the two-thread bench puts it behind a lock.
#[derive(Debug, Default)]
pub struct ReferenceTracker {
    last_seen: Option<RefOffset>,
    global: RefOffset,
    map: HashMap<u64, Entry>,
    by_flushed: BTreeSet<(RefOffset, u64)>,
    notified: Option<i64>,
    notifications: u64,
}

impl ReferenceTracker {
    /// An empty tracker: `global = (−1, 0)`, nothing seen, nothing notified.
    pub fn new() -> Self {
        ReferenceTracker {
            last_seen: None,
            global: (-1, 0),
            map: HashMap::new(),
            by_flushed: BTreeSet::new(),
            notified: None,
            notifications: 0,
        }
    }

    /// A commit whose last offset is `offset`, delivered to `writers`.
    pub fn commit(&mut self, offset: Offset, writers: &[u64]) {
        let at = widen(offset);
        let entered = (at.0 - 1, 0);
        for &w in writers {
            match self.map.get_mut(&w) {
                Some(e) => e.last_sent = at,
                None => {
                    self.map.insert(
                        w,
                        Entry {
                            last_sent: at,
                            flushed: entered,
                        },
                    );
                    self.by_flushed.insert((entered, w));
                }
            }
        }
        self.last_seen = Some(at);
        if self.map.is_empty() {
            self.recompute();
        }
    }

    /// `writer` reports everything up to `offset` flushed.
    pub fn flushed(&mut self, writer: u64, offset: Offset) {
        let report = widen(offset);
        let Some(e) = self.map.get_mut(&writer) else {
            return;
        };
        let old = e.flushed;
        if report >= e.last_sent {
            self.map.remove(&writer);
            self.by_flushed.remove(&(old, writer));
        } else {
            e.flushed = report;
            self.by_flushed.remove(&(old, writer));
            self.by_flushed.insert((report, writer));
        }
        self.recompute();
    }

    /// `writer` is gone: it leaves the map.
    pub fn remove(&mut self, writer: u64) {
        if let Some(e) = self.map.remove(&writer) {
            self.by_flushed.remove(&(e.flushed, writer));
        }
        self.recompute();
    }

    fn recompute(&mut self) {
        match self.by_flushed.first() {
            None => {
                if let Some(seen) = self.last_seen {
                    self.global = seen;
                    self.notify(seen.0);
                }
            }
            Some(&(min, _)) => {
                let next = self.global.max(min);
                if next != self.global {
                    self.global = next;
                    self.notify(next.0 - 1);
                }
            }
        }
    }

    fn notify(&mut self, tx: i64) {
        self.notified = Some(tx);
        self.notifications += 1;
    }

    /// The last notified value, if it is not negative ("nothing yet"). Not monotonic: this is
    /// the reference's raw output.
    pub fn ack(&self) -> Option<u64> {
        self.notified.and_then(|v| u64::try_from(v).ok())
    }

    /// How many notifications were sent (duplicates and negative values included).
    pub fn notifications(&self) -> u64 {
        self.notifications
    }

    /// Writers in the map.
    pub fn pending(&self) -> usize {
        self.map.len()
    }

    /// The last commit's offset.
    pub fn last_seen(&self) -> Option<Offset> {
        self.last_seen.map(|(tx, op)| Offset::new(tx as u64, op))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(tx: u64, op: u64) -> Offset {
        Offset::new(tx, op)
    }

    #[test]
    fn lags_one_commit_while_a_new_writer_is_the_minimum() {
        let mut r = ReferenceTracker::new();
        r.commit(o(10, 3), &[1, 2]);
        r.commit(o(11, 1), &[2]);
        // Both writers entered at (9, 0); the map was never empty: no recompute yet.
        assert_eq!(r.ack(), None, "nothing notified before the first recompute");
        r.flushed(2, o(11, 1));
        // Writer 1 still sits at its artificial (9, 0): global (9, 0), notify 8.
        assert_eq!(r.ack(), Some(8));
        r.flushed(1, o(10, 3));
        assert_eq!(r.ack(), Some(11));
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn partial_reports_and_removal() {
        let mut r = ReferenceTracker::new();
        r.commit(o(5, 0), &[7]);
        r.commit(o(6, 0), &[7, 8]);
        r.flushed(7, o(5, 0)); // partial: 7 owes (6, 0)
        // min flushed is writer 8's (5, 0): global (5, 0), notify 4.
        assert_eq!(r.ack(), Some(4));
        r.flushed(99, o(6, 0)); // absent: ignored
        r.remove(8);
        assert_eq!(
            r.ack(),
            Some(4),
            "global (5, 0) = writer 7's flushed: unchanged"
        );
        r.flushed(7, o(7, 0)); // beyond last_sent: completes (documented deviation)
        assert_eq!(r.ack(), Some(6));
        assert_eq!(r.last_seen(), Some(o(6, 0)));
    }

    #[test]
    fn empty_commit_with_nothing_pending_acks_at_once() {
        let mut r = ReferenceTracker::new();
        r.commit(o(3, 0), &[]);
        assert_eq!(r.ack(), Some(3));
        assert_eq!(r.notifications(), 1);
    }

    #[test]
    fn notifies_duplicates_like_the_original() {
        let mut r = ReferenceTracker::new();
        r.commit(o(3, 0), &[]);
        assert_eq!(r.ack(), Some(3));
        // Writer 1 enters at (4, 0); the map is not empty, so no recompute.
        r.commit(o(5, 0), &[1]);
        assert_eq!(r.notifications(), 1);
        // A partial report: global = max((3, 0), (4, 9)) = (4, 9), notify 4 − 1 = 3 again.
        r.flushed(1, o(4, 9));
        assert_eq!(r.ack(), Some(3));
        assert_eq!(r.notifications(), 2);
    }
}
