//! The independent observer: recomputes the exact safe bound from what the pipeline *proved*,
//! never from tracker internals, and checks every sampled ack against it.
//!
//! Its inputs, and why the check `ack <= bound` has no false positives:
//!
//! - **Deliveries** `(tx, writer)`: the sequencer hands each commit to the observer *before*
//!   `Tracker::commit`, so any commit the tracker knows when the ack is read is known here.
//!   (A commit rejected because a writer was just evicted leaves a ghost delivery to that
//!   writer; it is resolved by that writer's eviction, so it can only lower the bound while the
//!   eviction is unreported, and the gate below rules that window out.)
//! - **Proven** per writer: the highest tx the storage completed for it, stored *before* the
//!   batch is acked (the ack is what reports `flushed` to the tracker through the link).
//!   Batches of one writer complete in order (one in flight per writer), so "proven ≥ tx"
//!   means every message of that writer up to tx is durable.
//! - **Evicted** per writer: set by the sweeper while it holds the gate's write lock, in the
//!   same critical section as the `sweep` that evicted it (evictions happen only in sweeps
//!   here: kills are `teardown` downs). The sampler reads the ack holding the read lock, so any
//!   eviction the ack reflects is already marked.
//!
//! The sampler reads the ack first, then the deliveries, proven marks and evictions: all of
//! them only grow, so the bound computed afterwards is at least the bound at the moment the
//! ack was read. The bound is `(first tx some live writer has not proven) − 1`, or the last
//! tx when nothing is owed: docs/CONTRACT.md §3's exact value, over durable facts.

use std::collections::VecDeque;

/// The observer's state (one owner: the sampler thread).
#[derive(Clone, Debug, Default)]
pub(crate) struct Observer {
    /// Deliveries not yet proven, in commit order (lazy deletion at the head).
    owed: VecDeque<(u64, u32)>,
    last_tx: Option<u64>,
    last_ack: Option<u64>,
    /// Samples checked.
    pub samples: u64,
    /// Samples where the ack exceeded the bound.
    pub violations: u64,
    /// Samples where the ack went backwards.
    pub regressions: u64,
    /// The first violation: (ms, ack, bound).
    pub first_violation: Option<(u64, u64, Option<u64>)>,
    /// Samples where the ack equalled the bound (exact at that instant).
    pub exact_samples: u64,
}

impl Observer {
    /// Records deliveries `(tx, writer)` in commit order.
    pub(crate) fn record(&mut self, deliveries: impl IntoIterator<Item = (u64, u32)>) {
        for (tx, w) in deliveries {
            self.last_tx = self.last_tx.max(Some(tx));
            self.owed.push_back((tx, w));
        }
    }

    /// The last tx recorded.
    pub(crate) fn last_tx(&self) -> Option<u64> {
        self.last_tx
    }

    /// Deliveries still owed (memory of the observer).
    #[cfg(test)]
    pub(crate) fn owed(&self) -> usize {
        self.owed.len()
    }

    /// The exact safe bound over what was proven: `None` before any commit.
    pub(crate) fn bound(
        &mut self,
        proven: impl Fn(u32) -> u64,
        evicted: impl Fn(u32) -> bool,
    ) -> Option<u64> {
        while let Some(&(tx, w)) = self.owed.front() {
            if proven(w) >= tx || evicted(w) {
                self.owed.pop_front();
            } else {
                return Some(tx - 1);
            }
        }
        self.last_tx
    }

    /// Checks one sample: `ack` read before `bound` was computed. Returns true when it passed.
    pub(crate) fn check(&mut self, at_ms: u64, ack: Option<u64>, bound: Option<u64>) -> bool {
        self.samples += 1;
        let mut ok = true;
        if ack < self.last_ack {
            self.regressions += 1;
            ok = false;
        }
        self.last_ack = self.last_ack.max(ack);
        if let Some(a) = ack {
            if bound.is_none_or(|b| a > b) {
                self.violations += 1;
                self.first_violation.get_or_insert((at_ms, a, bound));
                ok = false;
            } else if Some(a) == bound {
                self.exact_samples += 1;
            }
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The observer catches an ack that passes a commit whose writer has not proven it — the
    /// mutant the whole simulation relies on being detectable.
    #[test]
    fn detects_an_ack_past_an_unflushed_commit() {
        let mut o = Observer::default();
        o.record([(1, 0), (1, 1), (2, 1), (3, 0)]);
        let proven = [1u64, 2];
        let b = o.bound(|w| proven[w as usize], |_| false);
        assert_eq!(b, Some(2), "writer 0 still owes commit 3");
        assert!(o.check(0, Some(2), b));
        assert!(
            !o.check(1, Some(3), b),
            "acking 3 passes the unflushed commit 3"
        );
        assert_eq!(o.violations, 1);
        assert_eq!(o.first_violation, Some((1, 3, Some(2))));
    }

    #[test]
    fn evictions_and_proofs_resolve_and_the_bound_reaches_the_last_commit() {
        let mut o = Observer::default();
        assert_eq!(o.bound(|_| 0, |_| false), None);
        assert!(
            !o.check(0, Some(0), None),
            "an ack before any commit is a violation"
        );
        o.record([(5, 0), (6, 1), (7, 2)]);
        assert_eq!(o.bound(|_| 0, |_| false), Some(4));
        assert_eq!(o.bound(|w| if w == 0 { 5 } else { 0 }, |_| false), Some(5));
        assert_eq!(o.bound(|_| 0, |w| w == 1), Some(6));
        assert_eq!(o.bound(|w| [5, 0, 7][w as usize], |_| false), Some(7));
        assert_eq!(o.owed(), 0);
    }

    #[test]
    fn regressions_are_counted() {
        let mut o = Observer::default();
        o.record([(3, 0)]);
        assert!(o.check(0, Some(3), Some(3)));
        assert!(!o.check(1, Some(2), Some(3)));
        assert_eq!((o.regressions, o.violations, o.exact_samples), (1, 0, 1));
    }
}
