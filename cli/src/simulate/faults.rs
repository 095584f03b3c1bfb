//! The fault plan (seeded) and what happened to each fault.
//!
//! | kind   | what the writer does                               | tracker calls            | expected             |
//! |--------|----------------------------------------------------|--------------------------|----------------------|
//! | kill   | stops at once; its buffer is stopped (handed back) | `down(teardown)`         | evicted `orphaned` within `G + P` |
//! | wedge  | keeps accepting, never flushes, never answers      | none                     | evicted `stalled` within `G + 2P` |
//! | slow   | storage latency `--slow-ms` per batch, progressing | none                     | never evicted        |
//! | pause  | held back by the host for `--pause-ms`             | `pause`, later `resume`  | never evicted        |
//!
//! The bounds count from the writer's last progress. Right after a kill or a wedge the
//! sequencer delivers one commit to the writer (the *anchor*), so the writer is surely pending
//! and its last progress is no later than the anchor: the report measures anchor → eviction.

use tidemark::EvictReason;

use super::config::Config;
use crate::common::Rng;
use crate::pipeline_common::faults::Targets;

/// A fault kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum FaultKind {
    /// Killed: never reports again; the monitor reports `teardown`.
    Kill,
    /// Wedged: accepts messages, never flushes, never answers a challenge.
    Wedge,
    /// Slow storage, still making progress.
    Slow,
    /// Held back by the host (backpressure).
    Pause,
}

impl FaultKind {
    /// A stable name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Wedge => "wedge",
            FaultKind::Slow => "slow",
            FaultKind::Pause => "pause",
        }
    }

    /// Must this fault end in an eviction (with this reason)?
    pub(crate) fn expected_eviction(self) -> Option<EvictReason> {
        match self {
            FaultKind::Kill => Some(EvictReason::Orphaned),
            FaultKind::Wedge => Some(EvictReason::Stalled),
            FaultKind::Slow | FaultKind::Pause => None,
        }
    }

    /// The documented detection bound in sweep periods: `G + k·P`.
    pub(crate) fn bound_sweeps(self) -> u64 {
        match self {
            FaultKind::Kill => 1,
            _ => 2,
        }
    }
}

/// One planned fault.
#[derive(Clone, Debug)]
pub(crate) struct Planned {
    /// What.
    pub kind: FaultKind,
    /// Which writer (simulator index).
    pub writer: u32,
    /// When, in ms after the start.
    pub at_ms: u64,
    /// For a pause: when it ends, in ms after the start.
    pub until_ms: Option<u64>,
}

/// Plans `config.faults` faults on distinct writers, in the first half of the run (after a
/// warm-up of a tenth), so that each resolves well before the drain.
pub(crate) fn plan(config: &Config, rng: &mut Rng) -> Vec<Planned> {
    const KINDS: [FaultKind; 4] = [
        FaultKind::Kill,
        FaultKind::Wedge,
        FaultKind::Slow,
        FaultKind::Pause,
    ];
    let total = config.common.duration.as_millis() as u64;
    let (from, to) = (total / 10, (total / 2).max(total / 10 + 1));
    let mut targets = Targets::new(config.common.writers);
    let mut out: Vec<Planned> = (0..config.faults)
        .map(|n| {
            let writer = targets.draw(rng);
            let at_ms = from + rng.below(to - from);
            let kind = KINDS[n % KINDS.len()];
            Planned {
                kind,
                writer,
                at_ms,
                until_ms: (kind == FaultKind::Pause).then_some(at_ms + config.pause_ms),
            }
        })
        .collect();
    out.sort_by_key(|p| p.at_ms);
    out
}

/// What happened to a fault (times in ms on the tracker's clock).
#[derive(Clone, Debug)]
pub(crate) struct Record {
    /// The plan.
    pub planned: Planned,
    /// When the owning worker applied it.
    pub applied_ms: Option<u64>,
    /// When the anchor commit was delivered to the writer (kill, wedge).
    pub anchor_ms: Option<u64>,
    /// When a pause was lifted.
    pub resumed_ms: Option<u64>,
    /// When and why it was evicted (by the sweep's clock).
    pub evicted: Option<(u64, EvictReason)>,
}

impl Record {
    /// A record for a planned fault.
    pub(crate) fn new(planned: Planned) -> Record {
        Record {
            planned,
            applied_ms: None,
            anchor_ms: None,
            resumed_ms: None,
            evicted: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_is_seeded_distinct_and_early() {
        let mut config = Config {
            faults: 12,
            ..Config::default()
        };
        config.common.writers = 50;
        let a = plan(&config, &mut Rng::new(3, 0));
        let b = plan(&config, &mut Rng::new(3, 0));
        assert_eq!(a.len(), 12);
        let key = |p: &[Planned]| p.iter().map(|f| (f.writer, f.at_ms)).collect::<Vec<_>>();
        assert_eq!(key(&a), key(&b));
        let writers: std::collections::HashSet<_> = a.iter().map(|f| f.writer).collect();
        assert_eq!(writers.len(), 12);
        let total = config.common.duration.as_millis() as u64;
        for f in &a {
            assert!(f.at_ms >= total / 10 && f.at_ms < total / 2);
        }
        for kind in [
            FaultKind::Kill,
            FaultKind::Wedge,
            FaultKind::Slow,
            FaultKind::Pause,
        ] {
            assert_eq!(a.iter().filter(|f| f.kind == kind).count(), 3);
        }
    }
}
