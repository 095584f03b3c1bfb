//! The final report: figures, per-fault detection times against the documented bounds, the
//! message balance and the invariant checks; as text or JSON.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::config::Config;
use super::faults::Record;
use super::observer::Observer;
use super::pipeline::{Eviction, Sample};
use crate::pipeline_common::Outcome;
use crate::pipeline_common::report::{Messages, Percentiles, opt};
use crate::pipeline_common::sweep::SweepLog;

/// What the storage sink counted itself (summed over the workers).
#[derive(Clone, Debug, Default)]
pub(crate) struct SinkTally {
    /// Messages delivered as the sink counted them (must equal the buffers' `delivered`).
    pub delivered: u64,
    /// Batches requeued by storage errors.
    pub requeued_batches: u64,
    /// Out-of-order deliveries.
    pub order_violations: u64,
}

/// Evictions of writers without a kill or wedge fault (each one is wrong).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct BadEvictions {
    /// Writers without a fault.
    pub healthy: u64,
    /// Slow writers.
    pub slow: u64,
    /// Paused writers.
    pub paused: u64,
}

impl BadEvictions {
    /// All of them.
    pub(crate) fn total(&self) -> u64 {
        self.healthy + self.slow + self.paused
    }
}

/// One fault's outcome.
#[derive(Clone, Debug)]
pub(crate) struct FaultOutcome {
    /// The record.
    pub record: Record,
    /// Anchor (or application) → eviction, ms.
    pub detect_ms: Option<u64>,
    /// The documented bound with the nominal sweep period.
    pub bound_nominal_ms: Option<u64>,
    /// The documented bound with the observed worst sweep gap.
    pub bound_ms: Option<u64>,
    /// Did it behave as specified?
    pub ok: bool,
    /// Why not.
    pub detail: String,
}

/// A named check.
#[derive(Clone, Debug)]
pub(crate) struct Check {
    /// What.
    pub name: &'static str,
    /// Passed?
    pub ok: bool,
    /// Figures behind it.
    pub detail: String,
}

/// Everything the run measured.
#[derive(Clone, Debug)]
pub(crate) struct Report {
    /// The configuration.
    pub config: Config,
    /// Tracker ms at the start (fault times in the report are relative to it).
    pub start_ms: u64,
    /// Building the tracker and buffers (ms).
    pub setup_ms: u64,
    /// Resident memory added by the setup (bytes; None where /proc is missing).
    pub setup_rss: Option<u64>,
    /// After the run: the batch buffers' fixed parts plus the rings and arenas that traffic
    /// allocated (`BatchBuffer::memory_bytes`, summed).
    pub buffer_bytes: u64,
    /// Production time (s).
    pub produce_s: f64,
    /// Drain: from the end of production until the final ack (ms).
    pub drain_ms: u64,
    /// Total wall time (s).
    pub total_s: f64,
    /// Commits.
    pub commits: u64,
    /// The last commit's tx.
    pub last_tx: u64,
    /// Tracker flush reports.
    pub flushes: u64,
    /// Batches acked.
    pub batches: u64,
    /// Commits retried after an eviction race.
    pub commit_retries: u64,
    /// Backpressure waits of the sequencer.
    pub throttled: u64,
    /// Message outcomes.
    pub messages: Messages,
    /// What the storage sink counted.
    pub sink: SinkTally,
    /// Observer samples.
    pub samples: Vec<Sample>,
    /// Ack lag percentiles over production samples (tx).
    pub lag: Percentiles<u64>,
    /// The observer's tallies.
    pub observer: Observer,
    /// Final ack and bound.
    pub final_ack: Option<u64>,
    /// The observer's final bound.
    pub final_bound: Option<u64>,
    /// Faults.
    pub faults: Vec<FaultOutcome>,
    /// Every eviction.
    pub evictions: Vec<Eviction>,
    /// Evictions of writers without a kill/wedge fault.
    pub bad_evictions: BadEvictions,
    /// What the sweeper measured.
    pub sweeps: SweepLog,
    /// Link errors, late acks, commit errors.
    pub errors: (u64, u64, u64),
    /// The first commit error.
    pub first_error: Option<String>,
}

impl Outcome for Report {
    /// Did every check pass?
    fn passed(&self) -> bool {
        self.checks().iter().all(|c| c.ok)
    }

    /// The human-readable report.
    fn text(&self) -> String {
        let c = &self.config;
        let m = &self.messages;
        let mut s = String::new();
        let rate = |n: u64| n as f64 / self.produce_s.max(1e-9);
        let _ = writeln!(s, "tidemark simulate — seed {}", c.common.seed);
        let _ = writeln!(
            s,
            "  {} writers ({} workers), grace {} ms, sweep {} ms, {} faults; setup {} ms{}",
            c.common.writers,
            c.common.workers,
            c.common.grace_ms,
            c.common.sweep_ms,
            c.faults,
            self.setup_ms,
            self.setup_rss.map_or(String::new(), |b| format!(
                ", {} MiB resident for tracker + buffers",
                b >> 20
            ))
        );
        let _ = writeln!(
            s,
            "  buffers after the run: {} MiB (fixed parts + rings and arenas allocated by traffic)",
            self.buffer_bytes >> 20
        );
        let _ = writeln!(
            s,
            "\nthroughput ({:.1} s producing, drain {} ms, total {:.1} s)",
            self.produce_s, self.drain_ms, self.total_s
        );
        for (name, n, what) in [
            ("commits", self.commits, ""),
            ("messages", m.delivered, " delivered"),
            ("batches", self.batches, " acked"),
            ("flushes", self.flushes, " reported to the tracker"),
        ] {
            let _ = writeln!(s, "  {name:<10}  {n:>12}  {:>10.0}/s{what}", rate(n));
        }
        let _ = writeln!(
            s,
            "  ack lag (commits behind the last)  p50 {}  p90 {}  p99 {}  max {}",
            self.lag.p50, self.lag.p90, self.lag.p99, self.lag.max
        );
        let _ = writeln!(
            s,
            "\nfaults (detection: anchor → eviction; bound G + k·P, P = worst observed sweep gap {} ms)",
            self.sweeps.max_gap_ms
        );
        for f in &self.faults {
            let r = &f.record;
            let what = match (r.planned.kind.expected_eviction(), r.evicted) {
                (Some(_), Some((_, reason))) => format!(
                    "evicted {:<8} after {:>5} ms  (bound {} ms, nominal {} ms)",
                    reason.as_str(),
                    opt(f.detect_ms),
                    opt(f.bound_ms),
                    opt(f.bound_nominal_ms)
                ),
                (Some(_), None) => "NOT evicted".to_owned(),
                (None, None) => match r.resumed_ms.zip(r.applied_ms) {
                    Some((b, a)) => format!("not evicted (paused {} ms)", b.saturating_sub(a)),
                    None => "not evicted".to_owned(),
                },
                (None, Some((_, reason))) => format!("WRONGLY evicted ({})", reason.as_str()),
            };
            let _ = writeln!(
                s,
                "  {:<5} writer {:>7} at {:>6} ms: {} {}",
                r.planned.kind.as_str(),
                r.planned.writer,
                r.planned.at_ms,
                what,
                if f.ok { "ok" } else { "FAILED" }
            );
            if !f.ok && !f.detail.is_empty() {
                let _ = writeln!(s, "        {}", f.detail);
            }
        }
        let _ = writeln!(
            s,
            "  sweeps {}, challenges {}, evictions {} (healthy {}, slow {}, paused {})",
            self.sweeps.sweeps,
            self.sweeps.challenges,
            self.evictions.len(),
            self.bad_evictions.healthy,
            self.bad_evictions.slow,
            self.bad_evictions.paused
        );
        let _ = writeln!(s, "\nmessages");
        let _ = writeln!(
            s,
            "  offered {}  accepted {}  delivered {}  handed back {} ({} outcome unknown)  failed {}  returned unaccepted {}  lost {}",
            m.offered,
            m.accepted,
            m.delivered,
            m.handed_back,
            m.in_flight_unknown,
            m.failed,
            m.returned,
            m.lost()
        );
        let _ = writeln!(
            s,
            "  storage errors requeued {} batches",
            self.sink.requeued_batches
        );
        let _ = writeln!(s, "\nchecks");
        for ch in self.checks() {
            let _ = writeln!(
                s,
                "  [{}] {}: {}",
                if ch.ok { "ok" } else { "FAIL" },
                ch.name,
                ch.detail
            );
        }
        let _ = writeln!(s, "\n{}", if self.passed() { "PASSED" } else { "FAILED" });
        s
    }

    /// The report as JSON.
    fn json(&self) -> Value {
        let c = &self.config;
        let m = &self.messages;
        let rate = |n: u64| n as f64 / self.produce_s.max(1e-9);
        let faults: Vec<Value> = self
            .faults
            .iter()
            .map(|f| {
                let r = &f.record;
                json!({
                    "kind": r.planned.kind.as_str(),
                    "writer": r.planned.writer,
                    "at_ms": r.planned.at_ms,
                    "applied_ms": r.applied_ms.map(|t| t.saturating_sub(self.start_ms)),
                    "anchor_ms": r.anchor_ms.map(|t| t.saturating_sub(self.start_ms)),
                    "resumed_ms": r.resumed_ms.map(|t| t.saturating_sub(self.start_ms)),
                    "evicted_ms": r.evicted.map(|(t, _)| t.saturating_sub(self.start_ms)),
                    "reason": r.evicted.map(|(_, why)| why.as_str()),
                    "detect_ms": f.detect_ms,
                    "bound_ms": f.bound_ms,
                    "bound_nominal_ms": f.bound_nominal_ms,
                    "ok": f.ok,
                })
            })
            .collect();
        let checks: Vec<Value> = self
            .checks()
            .iter()
            .map(|ch| json!({"name": ch.name, "ok": ch.ok, "detail": ch.detail}))
            .collect();
        json!({
            "config": {
                "duration_ms": c.common.duration.as_millis() as u64,
                "writers": c.common.writers,
                "workers": c.common.workers,
                "rate": c.rate,
                "faults": c.faults,
                "grace_ms": c.common.grace_ms,
                "sweep_ms": c.common.sweep_ms,
                "seed": c.common.seed,
            },
            "setup": {"ms": self.setup_ms, "rss_bytes": self.setup_rss},
            "buffer_bytes": self.buffer_bytes,
            "throughput": {
                "produce_s": self.produce_s,
                "drain_ms": self.drain_ms,
                "total_s": self.total_s,
                "commits": self.commits,
                "commits_per_s": rate(self.commits),
                "messages_per_s": rate(m.delivered),
                "batches_per_s": rate(self.batches),
                "flushes_per_s": rate(self.flushes),
                "last_tx": self.last_tx,
                "commit_retries": self.commit_retries,
                "throttled": self.throttled,
            },
            "ack_lag": {"p50": self.lag.p50, "p90": self.lag.p90, "p99": self.lag.p99, "max": self.lag.max},
            "faults": faults,
            "evictions": {
                "list": self.evictions.iter().map(|e| json!({
                    "writer": e.writer,
                    "reason": e.reason.as_str(),
                    "at_ms": e.at_ms.saturating_sub(self.start_ms),
                    "fault": e.fault.map(|f| f.as_str()),
                })).collect::<Vec<_>>(),
                "total": self.evictions.len(),
                "healthy": self.bad_evictions.healthy,
                "slow": self.bad_evictions.slow,
                "paused": self.bad_evictions.paused,
                "sweeps": self.sweeps.sweeps,
                "max_sweep_gap_ms": self.sweeps.max_gap_ms,
                "challenges": self.sweeps.challenges,
            },
            "messages": {
                "offered": m.offered,
                "accepted": m.accepted,
                "delivered": m.delivered,
                "handed_back": m.handed_back,
                "in_flight_unknown": m.in_flight_unknown,
                "failed": m.failed,
                "returned": m.returned,
                "lost": m.lost() as i64,
                "requeued_batches": self.sink.requeued_batches,
            },
            "observer": {
                "samples": self.observer.samples,
                "violations": self.observer.violations,
                "regressions": self.observer.regressions,
                "exact_samples": self.observer.exact_samples,
            },
            "final": {"last_commit": self.last_tx, "ack": self.final_ack, "bound": self.final_bound},
            "checks": checks,
            "passed": self.passed(),
        })
    }
}

impl Report {
    /// The checks; the run passes when all pass.
    pub(crate) fn checks(&self) -> Vec<Check> {
        let m = &self.messages;
        let o = &self.observer;
        let (samples, violations, regressions) = (o.samples, o.violations, o.regressions);
        let faults_ok = self.faults.iter().all(|f| f.ok);
        let bad = self.bad_evictions.total();
        vec![
            Check {
                name: "ack never above the exact safe bound",
                ok: violations == 0 && regressions == 0 && samples > 0,
                detail: match o.first_violation {
                    None => format!(
                        "{samples} samples, {violations} violations, {regressions} regressions"
                    ),
                    Some((t, a, b)) => format!(
                        "{violations} violations in {samples} samples; first at {t} ms: ack {a} > bound {}",
                        opt(b)
                    ),
                },
            },
            Check {
                name: "final ack equals the last commit",
                ok: self.final_ack == Some(self.last_tx) && self.final_bound == Some(self.last_tx),
                detail: format!(
                    "last commit {}, ack {}, observer bound {}",
                    self.last_tx,
                    opt(self.final_ack),
                    opt(self.final_bound)
                ),
            },
            Check {
                name: "messages balance, zero lost",
                ok: m.balanced() && self.sink.delivered == m.delivered,
                detail: format!(
                    "accepted {} = delivered {} + handed back {} + failed {}; offered {} = accepted {} + returned {}; lost {}",
                    m.accepted,
                    m.delivered,
                    m.handed_back,
                    m.failed,
                    m.offered,
                    m.accepted,
                    m.returned,
                    m.lost()
                ),
            },
            Check {
                name: "graceful stop: live writers handed nothing back",
                ok: m.handed_back_live == 0,
                detail: format!("{} handed back by live writers", m.handed_back_live),
            },
            Check {
                name: "per-writer delivery order",
                ok: self.sink.order_violations == 0,
                detail: format!("{} out-of-order deliveries", self.sink.order_violations),
            },
            Check {
                name: "no healthy, slow or paused writer evicted",
                ok: bad == 0,
                detail: format!(
                    "healthy {}, slow {}, paused {}",
                    self.bad_evictions.healthy, self.bad_evictions.slow, self.bad_evictions.paused
                ),
            },
            Check {
                name: "kills and wedges evicted within the documented bound",
                ok: faults_ok,
                detail: format!(
                    "{} of {} faults as specified",
                    self.faults.iter().filter(|f| f.ok).count(),
                    self.faults.len()
                ),
            },
            Check {
                name: "no commit or link errors",
                ok: self.errors == (0, 0, 0),
                detail: format!(
                    "link errors {}, late acks {}, commit errors {}{}",
                    self.errors.0,
                    self.errors.1,
                    self.errors.2,
                    self.first_error
                        .as_ref()
                        .map_or(String::new(), |e| format!(" ({e})"))
                ),
            },
        ]
    }
}
