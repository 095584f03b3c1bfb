//! Pieces of the final reports both commands print: the message balance summed from the
//! buffers' stop reports, named checks, percentiles and optional figures.

use tidemark::batch::StopReport;

/// Message outcomes, summed over every writer.
#[derive(Clone, Debug, Default)]
pub(crate) struct Messages {
    /// Offered by the producer (one per writer per commit).
    pub offered: u64,
    /// Accepted by the buffers.
    pub accepted: u64,
    /// Delivered (stored and acked), from the buffers' stop reports.
    pub delivered: u64,
    /// Handed back by stops (kills, evictions, the end of the run).
    pub handed_back: u64,
    /// Of which in flight at the stop (outcome unknown).
    pub in_flight_unknown: u64,
    /// Handed back by writers alive at the end (must be 0: graceful).
    pub handed_back_live: u64,
    /// Failed (nacked without requeue).
    pub failed: u64,
    /// Never accepted: refused by a stopped buffer or left in a dead writer's spill queue,
    /// returned to the host for redelivery.
    pub returned: u64,
    /// Buffers whose own report did not balance.
    pub unbalanced_buffers: u64,
}

impl Messages {
    /// Adds one buffer's stop report; `live`: its writer was alive at the end.
    pub(crate) fn add(&mut self, r: &StopReport, live: bool) {
        self.accepted += r.accepted;
        self.delivered += r.delivered;
        self.failed += r.failed;
        self.handed_back += r.handed_back_count();
        self.in_flight_unknown += r.in_flight_unknown;
        if r.accepted != r.delivered + r.failed + r.handed_back_count() {
            self.unbalanced_buffers += 1;
        }
        if live {
            self.handed_back_live += r.handed_back_count();
        }
    }

    /// `offered − delivered − failed − handed back − returned` (0 when nothing was lost).
    pub(crate) fn lost(&self) -> i128 {
        self.offered as i128
            - self.delivered as i128
            - self.failed as i128
            - self.handed_back as i128
            - self.returned as i128
    }

    /// Every buffer balanced, in total too, and nothing was lost.
    pub(crate) fn balanced(&self) -> bool {
        self.accepted == self.delivered + self.handed_back + self.failed
            && self.lost() == 0
            && self.unbalanced_buffers == 0
    }
}

/// p50, p90, p99 and the maximum of a series.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Percentiles<T> {
    /// Median.
    pub p50: T,
    /// 90th percentile.
    pub p90: T,
    /// 99th percentile.
    pub p99: T,
    /// Maximum.
    pub max: T,
}

/// The percentiles of `values` (all zero when empty).
pub(crate) fn percentiles<T: Ord + Copy + Default>(mut values: Vec<T>) -> Percentiles<T> {
    if values.is_empty() {
        return Percentiles::default();
    }
    values.sort_unstable();
    let at = |p: f64| values[((values.len() - 1) as f64 * p).round() as usize];
    Percentiles {
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
        max: *values.last().expect("non-empty"),
    }
}

/// A figure, or `-` when there is none.
pub(crate) fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_series() {
        let p = percentiles((1..=100u64).collect());
        assert_eq!((p.p50, p.p90, p.p99, p.max), (51, 90, 99, 100));
        assert_eq!(percentiles(Vec::<i64>::new()), Percentiles::default());
    }
}
