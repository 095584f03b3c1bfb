//! The fault plan (seeded) and what happened to each fault.
//!
//! | kind  | what the writer does                                   | tracker calls      | expected (tidemark)               |
//! |-------|--------------------------------------------------------|--------------------|-----------------------------------|
//! | kill  | its worker drops it: in-flight batch abandoned, no ack | `down(teardown)`   | evicted `orphaned` within `G + P` |
//! | wedge | keeps accepting, never stores, never answers           | none               | evicted `stalled` within `G + 2P` |
//! | slow  | storage latency `--slow-ms` per batch, progressing     | none               | never evicted                     |
//!
//! The bounds count from the writer's last progress. Right after a kill or a wedge the load
//! generator writes a row with a key of that writer (the *anchor*), so the writer is surely
//! pending and its last progress is no later than the commit that carries the anchor: the report
//! measures from the dispatch of the first commit to the writer after the fault. Electric's
//! algorithm has no sweeps: there, kills and wedges pin the slot for good (the report says so).

use tidemark::EvictReason;

use super::config::{Config, FaultKind};
use crate::common::Rng;
use crate::pipeline_common::faults::Targets;

/// One planned fault.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Planned {
    /// What.
    pub kind: FaultKind,
    /// Which writer.
    pub writer: u32,
    /// When, in ms after the load started.
    pub at_ms: u64,
}

/// Plans the configured faults on distinct writers.
pub(crate) fn plan(cfg: &Config) -> Vec<Planned> {
    let mut rng = Rng::new(cfg.common.seed, 7);
    let mut targets = Targets::new(cfg.common.writers);
    let mut out: Vec<Planned> = cfg
        .faults
        .iter()
        .zip(cfg.fault_times())
        .map(|(f, at_ms)| Planned {
            kind: f.kind,
            writer: targets.draw(&mut rng),
            at_ms,
        })
        .collect();
    out.sort_by_key(|p| p.at_ms);
    out
}

/// What happened to a fault (times in ms on the run's clock, since the load started).
#[derive(Clone, Debug)]
pub(crate) struct Record {
    /// The plan.
    pub planned: Planned,
    /// When the owning worker applied it.
    pub applied_ms: Option<u64>,
    /// When the first commit after it was dispatched to the writer.
    pub anchor_ms: Option<u64>,
    /// That commit's LSN: once the slot's confirmed position passes it, the writer no longer
    /// holds the slot.
    pub anchor_lsn: Option<u64>,
    /// When and why it was evicted (the sweep's clock).
    pub evicted: Option<(u64, EvictReason)>,
}

impl Record {
    /// A record for a planned fault.
    pub(crate) fn new(planned: Planned) -> Record {
        Record {
            planned,
            applied_ms: None,
            anchor_ms: None,
            anchor_lsn: None,
            evicted: None,
        }
    }

    /// The expected eviction reason (kill and wedge).
    pub(crate) fn expected(&self) -> Option<EvictReason> {
        match self.planned.kind {
            FaultKind::Kill => Some(EvictReason::Orphaned),
            FaultKind::Wedge => Some(EvictReason::Stalled),
            FaultKind::Slow => None,
        }
    }
}
