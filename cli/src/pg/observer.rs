//! The independent check of the one safety property: the slot is never confirmed past a change
//! that some writer it went to (and that was not evicted) had not stored.
//!
//! The observer never reads the tracker. Its inputs are durable facts, each published *before*
//! the event that could let the confirmed position pass it:
//!
//! - deliveries `(commit_lsn, writer)`, published by the dispatcher before the commit reaches
//!   the tracker;
//! - per writer, the highest commit LSN whose rows its store holds (`proven`), set by the
//!   worker after the append (and fsync) returned and before the batch is acked;
//! - per writer, an `evicted` mark, set by the sweeper in the same gate-locked section as the
//!   sweep that evicted it.
//!
//! A sample first reads the slot's `confirmed_flush_lsn` from the server, then these facts
//! (under the gate's read lock). The facts only grow, so reading them later can only raise the
//! bound: `confirmed <= bound` has no false positives. The bound is the commit LSN of the first
//! delivery that is neither stored nor evicted — confirming up to that LSN does not skip that
//! commit (PostgreSQL skips commits that start *below* the confirmed position) — or `None`
//! (unbounded) when every delivery is done.

use std::collections::VecDeque;

/// The observer's log and tallies.
#[derive(Debug, Default)]
pub struct Observer {
    /// Deliveries not known done, in commit order.
    log: VecDeque<(u64, u32)>,
    /// Samples checked.
    pub samples: u64,
    /// Samples whose confirmed position was above the bound.
    pub violations: u64,
    /// Samples whose confirmed position was below the previous one.
    pub regressions: u64,
    /// The first violation: (ms, confirmed, bound).
    pub first_violation: Option<(u64, u64, u64)>,
    last_confirmed: Option<u64>,
}

impl Observer {
    /// Adds deliveries published since the last call (in commit order).
    pub fn record(&mut self, new: impl IntoIterator<Item = (u64, u32)>) {
        self.log.extend(new);
    }

    /// The bound over the facts `proven` and `evicted` (see the module docs). Pops deliveries
    /// that are done for good (both facts only grow).
    pub fn bound(
        &mut self,
        proven: impl Fn(u32) -> u64,
        evicted: impl Fn(u32) -> bool,
    ) -> Option<u64> {
        while let Some(&(lsn, w)) = self.log.front() {
            if proven(w) >= lsn || evicted(w) {
                self.log.pop_front();
            } else {
                return Some(lsn);
            }
        }
        None
    }

    /// Checks one sample: `confirmed` (read first) against `bound` (computed after).
    pub fn check(&mut self, t_ms: u64, confirmed: u64, bound: Option<u64>) -> bool {
        self.samples += 1;
        let mut ok = true;
        if let Some(b) = bound
            && confirmed > b
        {
            self.violations += 1;
            self.first_violation.get_or_insert((t_ms, confirmed, b));
            ok = false;
        }
        if self.last_confirmed.is_some_and(|last| confirmed < last) {
            self.regressions += 1;
            ok = false;
        }
        self.last_confirmed = Some(self.last_confirmed.map_or(confirmed, |l| l.max(confirmed)));
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_is_the_first_delivery_neither_stored_nor_evicted() {
        let mut o = Observer::default();
        o.record([(10, 0), (10, 1), (20, 1), (30, 2)]);
        let proven = [10u64, 0, 0];
        assert_eq!(o.bound(|w| proven[w as usize], |_| false), Some(10));
        // Writer 1 evicted: its deliveries no longer bind.
        assert_eq!(o.bound(|w| proven[w as usize], |w| w == 1), Some(30));
        assert!(
            o.check(5, 30, Some(30)),
            "confirming the bound itself skips nothing"
        );
        assert!(!o.check(6, 31, Some(30)));
        assert_eq!(o.violations, 1);
        assert_eq!(o.first_violation, Some((6, 31, 30)));
        assert!(
            !o.check(7, 29, Some(30)),
            "a confirmed position moving back is a regression"
        );
        assert_eq!(o.regressions, 1);
        assert_eq!(o.bound(|_| 30, |_| false), None);
        assert!(o.check(8, u64::MAX, None));
        assert_eq!(o.samples, 4);
    }
}
