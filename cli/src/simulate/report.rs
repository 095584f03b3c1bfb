//! The final report: figures, per-fault detection times against the documented bounds, the
//! message balance and the invariant checks; as text or JSON.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::config::Config;
use super::faults::Record;
use super::pipeline::{Eviction, Sample};

/// Message outcomes, summed over every writer.
#[derive(Clone, Debug, Default)]
pub(crate) struct Messages {
    /// Offered by the sequencer (one per writer per commit).
    pub offered: u64,
    /// Accepted by the buffers.
    pub accepted: u64,
    /// Delivered (acked batches), from the buffers' stop reports.
    pub delivered: u64,
    /// Delivered as counted by the storage sink (must equal `delivered`).
    pub sink_delivered: u64,
    /// Handed back by stops.
    pub handed_back: u64,
    /// Of which in flight at the stop (outcome unknown).
    pub in_flight_unknown: u64,
    /// Handed back by buffers of writers that were alive at the end (must be 0: graceful).
    pub handed_back_live: u64,
    /// Failed (nacked without requeue).
    pub failed: u64,
    /// Never accepted: refused by a stopped buffer or left in a dead writer's spill queue,
    /// returned to the host for redelivery.
    pub returned: u64,
    /// Batches requeued by storage errors.
    pub requeued_batches: u64,
    /// Buffers whose own report did not balance.
    pub unbalanced_buffers: u64,
    /// Out-of-order deliveries.
    pub order_violations: u64,
}

impl Messages {
    /// `offered − delivered − failed − handed back − returned` (0 when nothing was lost).
    pub(crate) fn lost(&self) -> i128 {
        self.offered as i128
            - self.delivered as i128
            - self.failed as i128
            - self.handed_back as i128
            - self.returned as i128
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
    /// Observer samples.
    pub samples: Vec<Sample>,
    /// Ack lag percentiles over production samples: p50, p90, p99, max (tx).
    pub lag: [u64; 4],
    /// Observer: samples, violations, regressions, exact samples.
    pub observer: [u64; 4],
    /// The first violation (ms, ack, bound).
    pub first_violation: Option<(u64, u64, Option<u64>)>,
    /// Final ack and bound.
    pub final_ack: Option<u64>,
    /// The observer's final bound.
    pub final_bound: Option<u64>,
    /// Faults.
    pub faults: Vec<FaultOutcome>,
    /// Every eviction.
    pub evictions: Vec<Eviction>,
    /// Evictions of writers without a kill/wedge fault, by kind: healthy, slow, paused.
    pub bad_evictions: [u64; 3],
    /// Sweeps run, worst gap (ms), challenges.
    pub sweeps: (u64, u64, u64),
    /// Link errors, late acks, commit errors.
    pub errors: (u64, u64, u64),
    /// The first commit error.
    pub first_error: Option<String>,
}

/// Percentiles p50, p90, p99, max of `values`.
pub(crate) fn percentiles(mut values: Vec<u64>) -> [u64; 4] {
    if values.is_empty() {
        return [0; 4];
    }
    values.sort_unstable();
    let at = |p: f64| values[((values.len() - 1) as f64 * p).round() as usize];
    [
        at(0.50),
        at(0.90),
        at(0.99),
        *values.last().expect("non-empty"),
    ]
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

impl Report {
    /// The checks; the run passes when all pass.
    pub(crate) fn checks(&self) -> Vec<Check> {
        let m = &self.messages;
        let [samples, violations, regressions, _] = self.observer;
        let faults_ok = self.faults.iter().all(|f| f.ok);
        let bad: u64 = self.bad_evictions.iter().sum();
        vec![
            Check {
                name: "ack never above the exact safe bound",
                ok: violations == 0 && regressions == 0 && samples > 0,
                detail: match self.first_violation {
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
                ok: m.accepted == m.delivered + m.handed_back + m.failed
                    && m.lost() == 0
                    && m.unbalanced_buffers == 0
                    && m.sink_delivered == m.delivered,
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
                ok: m.order_violations == 0,
                detail: format!("{} out-of-order deliveries", m.order_violations),
            },
            Check {
                name: "no healthy, slow or paused writer evicted",
                ok: bad == 0,
                detail: format!(
                    "healthy {}, slow {}, paused {}",
                    self.bad_evictions[0], self.bad_evictions[1], self.bad_evictions[2]
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

    /// Did every check pass?
    pub(crate) fn passed(&self) -> bool {
        self.checks().iter().all(|c| c.ok)
    }

    /// The human-readable report.
    pub(crate) fn text(&self) -> String {
        let c = &self.config;
        let m = &self.messages;
        let mut s = String::new();
        let rate = |n: u64| n as f64 / self.produce_s.max(1e-9);
        let _ = writeln!(s, "tidemark simulate — seed {}", c.seed);
        let _ = writeln!(
            s,
            "  {} writers ({} workers), grace {} ms, sweep {} ms, {} faults; setup {} ms{}",
            c.writers,
            c.workers,
            c.grace_ms,
            c.sweep_ms,
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
        let _ = writeln!(
            s,
            "  commits     {:>12}  {:>10.0}/s",
            self.commits,
            rate(self.commits)
        );
        let _ = writeln!(
            s,
            "  messages    {:>12}  {:>10.0}/s delivered",
            m.delivered,
            rate(m.delivered)
        );
        let _ = writeln!(
            s,
            "  batches     {:>12}  {:>10.0}/s acked",
            self.batches,
            rate(self.batches)
        );
        let _ = writeln!(
            s,
            "  flushes     {:>12}  {:>10.0}/s reported to the tracker",
            self.flushes,
            rate(self.flushes)
        );
        let _ = writeln!(
            s,
            "  ack lag (commits behind the last)  p50 {}  p90 {}  p99 {}  max {}",
            self.lag[0], self.lag[1], self.lag[2], self.lag[3]
        );
        let _ = writeln!(
            s,
            "\nfaults (detection: anchor → eviction; bound G + k·P, P = worst observed sweep gap {} ms)",
            self.sweeps.1
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
            self.sweeps.0,
            self.sweeps.2,
            self.evictions.len(),
            self.bad_evictions[0],
            self.bad_evictions[1],
            self.bad_evictions[2]
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
            m.requeued_batches
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
    pub(crate) fn json(&self) -> Value {
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
                "duration_ms": c.duration.as_millis() as u64,
                "writers": c.writers,
                "workers": c.workers,
                "rate": c.rate,
                "faults": c.faults,
                "grace_ms": c.grace_ms,
                "sweep_ms": c.sweep_ms,
                "seed": c.seed,
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
            "ack_lag": {"p50": self.lag[0], "p90": self.lag[1], "p99": self.lag[2], "max": self.lag[3]},
            "faults": faults,
            "evictions": {
                "list": self.evictions.iter().map(|e| json!({
                    "writer": e.writer,
                    "reason": e.reason.as_str(),
                    "at_ms": e.at_ms.saturating_sub(self.start_ms),
                    "fault": e.fault.map(|f| f.as_str()),
                })).collect::<Vec<_>>(),
                "total": self.evictions.len(),
                "healthy": self.bad_evictions[0],
                "slow": self.bad_evictions[1],
                "paused": self.bad_evictions[2],
                "sweeps": self.sweeps.0,
                "max_sweep_gap_ms": self.sweeps.1,
                "challenges": self.sweeps.2,
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
                "requeued_batches": m.requeued_batches,
            },
            "observer": {
                "samples": self.observer[0],
                "violations": self.observer[1],
                "regressions": self.observer[2],
                "exact_samples": self.observer[3],
            },
            "final": {"last_commit": self.last_tx, "ack": self.final_ack, "bound": self.final_bound},
            "checks": checks,
            "passed": self.passed(),
        })
    }
}
