//! The final report: what was streamed and stored, retained WAL, each fault against its bound,
//! and the checks; as text or JSON. Figures are gathered in `mod.rs`; this file judges and
//! prints them.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::ack::lsn_str;
use super::config::{Config, TrackerKind};
use super::faults::Record;
use super::pipeline::Eviction;
use super::sampler::Sample;
use crate::pipeline_common::Outcome;
use crate::pipeline_common::report::{Messages, Percentiles, opt};
use crate::pipeline_common::sweep::SweepLog;

/// Fixed margin of the WAL-return deadline for a loaded machine (ms): see docs/PG.md.
pub(crate) const SLACK_MARGIN_MS: u64 = 1_000;

/// Evictions of writers without a kill or wedge fault (each one is wrong).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct BadEvictions {
    /// Writers without a fault.
    pub healthy: u64,
    /// Slow writers.
    pub slow: u64,
}

/// The final store check.
#[derive(Clone, Debug, Default)]
pub(crate) struct StoreCheck {
    /// Rows streamed in commits below the final confirmed position, to writers not evicted.
    pub confirmed_rows: u64,
    /// Of which missing from their writer's store.
    pub confirmed_missing: u64,
    /// The first missing one (commit LSN, writer).
    pub first_missing: Option<(u64, u32)>,
    /// Rows the load generator committed.
    pub generated: u64,
    /// Of which not streamed.
    pub not_streamed: u64,
    /// Of which to writers alive at the end.
    pub live_rows: u64,
    /// Of which missing from the live writer's store.
    pub live_missing: u64,
    /// Rows to writers that were killed, wedged or evicted (not required in their stores).
    pub dead_rows: u64,
    /// Records stored twice.
    pub duplicates: u64,
    /// Malformed store lines.
    pub malformed: u64,
    /// Rows stored in all.
    pub stored: u64,
    /// Store files that could not be read.
    pub unreadable: u64,
}

/// One fault's outcome.
#[derive(Clone, Debug)]
pub(crate) struct FaultOutcome {
    /// The record.
    pub record: Record,
    /// Anchor → eviction (ms).
    pub detect_ms: Option<u64>,
    /// `G + k·P` with the nominal `P`.
    pub bound_nominal_ms: u64,
    /// `G + k·P` with the worst observed sweep gap.
    pub bound_ms: u64,
    /// Highest retained WAL from the fault until it recovered (or the end), bytes.
    pub peak_retained: i64,
    /// Anchor → first sample after the eviction with retained WAL below the threshold (ms).
    pub recovered_ms: Option<u64>,
    /// The deadline for that: bound + slack (ms after the anchor).
    pub recover_deadline_ms: u64,
    /// Detection as specified (reason, bound; or not evicted for a slow writer).
    pub ok: bool,
    /// Retained WAL back below the threshold by the deadline (kill and wedge).
    pub wal_ok: bool,
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
    /// Counts toward the exit status (informational checks show what a baseline does).
    pub required: bool,
    /// Figures behind it.
    pub detail: String,
}

/// Everything the run measured.
#[derive(Clone, Debug)]
pub(crate) struct Report {
    /// The configuration.
    pub config: Config,
    /// `server_version`.
    pub server: String,
    /// The slot was created by this run (and dropped at the end unless kept).
    pub created_slot: bool,
    /// The publication was created by this run (it is kept: it retains nothing).
    pub created_publication: bool,
    /// Where the stores were.
    pub store_dir: String,
    /// The slot's position at the start.
    pub start_lsn: u64,
    /// Load: seconds, transactions, noise transactions, rows, anchors, errors (+ first).
    pub load: (f64, u64, u64, u64, u64, u64, Option<String>),
    /// WAL written during the load (bytes) and its rate (bytes/s).
    pub wal_bytes: u64,
    /// Bytes per second of WAL during the load.
    pub wal_rate: f64,
    /// Commits streamed, rows streamed, keepalives, keepalives queued, standby updates sent.
    pub stream: (u64, u64, u64, u64, u64),
    /// Batches stored, bytes stored.
    pub stored: (u64, u64),
    /// The fence commit (commit LSN, end LSN).
    pub fence: Option<(u64, u64)>,
    /// The final confirmed position (server), the final ack-mapped position (ours).
    pub final_confirmed: u64,
    /// The newest position handed to the replication client.
    pub last_applied: u64,
    /// Retained WAL (confirmed) percentiles during the load.
    pub retained: Percentiles<i64>,
    /// The threshold the WAL-return check uses (bytes).
    pub threshold: i64,
    /// Slack added to the detection bound for the WAL-return check (ms).
    pub slack_ms: u64,
    /// Retained WAL by restart_lsn in the last sample (after the CHECKPOINT and the fence).
    pub final_retained_restart: Option<i64>,
    /// Observer: samples, violations, regressions, first violation.
    pub observer: (u64, u64, u64, Option<(u64, u64, u64)>),
    /// Faults.
    pub faults: Vec<FaultOutcome>,
    /// Evictions.
    pub evictions: Vec<Eviction>,
    /// Evicted writers the tracker counts (tidemark), for the "every eviction reported" check.
    pub tracker_evictions: Option<u64>,
    /// Writers marked evicted.
    pub marked_evicted: u64,
    /// Evictions of writers without a kill/wedge: healthy, slow.
    pub bad_evictions: BadEvictions,
    /// What the sweeper measured.
    pub sweeps: SweepLog,
    /// Rows not delivered because their writer was invalidated.
    pub rows_invalidated: u64,
    /// Message outcomes.
    pub messages: Messages,
    /// The store check.
    pub store: StoreCheck,
    /// Errors: run errors, store errors, link errors, late acks.
    pub errors: (Vec<String>, u64, u64, u64),
    /// Samples.
    pub samples: Vec<Sample>,
    /// When the load was told to stop (ms since the start).
    pub stop_ms: Option<u64>,
    /// Wall time (s).
    pub total_s: f64,
}

/// Bytes as KiB, or MiB from 10 MiB on.
pub(crate) fn kib(b: i64) -> String {
    if b.abs() >= 10 << 20 {
        format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
    } else {
        format!("{} KiB", b / 1024)
    }
}

impl Outcome for Report {
    /// Did every required check pass?
    fn passed(&self) -> bool {
        self.checks().iter().all(|c| c.ok || !c.required)
    }

    /// The human-readable report.
    fn text(&self) -> String {
        let c = &self.config;
        let mut s = String::new();
        let (load_s, txns, noise, rows, anchors, _, _) = self.load.clone();
        let _ = writeln!(
            s,
            "tidemark pg — tracker {}, PostgreSQL {}, slot {} ({}), publication {} ({}), seed {}",
            c.tracker.as_str(),
            self.server,
            c.slot,
            if self.created_slot {
                "created by this run"
            } else {
                "existing"
            },
            c.publication,
            if self.created_publication {
                "created"
            } else {
                "existing"
            },
            c.common.seed
        );
        let _ = writeln!(
            s,
            "  {} writers ({} workers, latency {} ms{}), grace {} ms, sweep {} ms, status every {} ms; stores in {}",
            c.common.writers,
            c.common.workers,
            c.latency_ms,
            if c.fsync { ", fsync" } else { "" },
            c.common.grace_ms,
            c.common.sweep_ms,
            c.status_ms,
            self.store_dir
        );
        let _ = writeln!(
            s,
            "\nload ({load_s:.1} s, total {:.1} s)\n  rows {rows} ({:.0}/s) in {txns} transactions, {noise} on the unpublished table, {anchors} anchors",
            self.total_s,
            rows as f64 / load_s.max(1e-9)
        );
        let (commits, srows, keepalives, queued, feedback) = self.stream;
        let _ = writeln!(
            s,
            "  streamed {commits} commits, {srows} rows; {keepalives} keepalives ({queued} usable as ack points); {feedback} standby status updates"
        );
        let _ = writeln!(
            s,
            "  stored {} batches, {} KiB; rows not delivered to invalidated writers {}",
            self.stored.0,
            self.stored.1 / 1024,
            self.rows_invalidated
        );
        let r = &self.retained;
        let _ = writeln!(
            s,
            "\nWAL ({} written, {}/s)\n  retained (current − confirmed_flush)  p50 {}  p90 {}  p99 {}  max {}",
            kib(self.wal_bytes as i64),
            kib(self.wal_rate as i64),
            kib(r.p50),
            kib(r.p90),
            kib(r.p99),
            kib(r.max)
        );
        if let Some(rr) = self.final_retained_restart {
            let _ = writeln!(
                s,
                "  after CHECKPOINT and the stop: the slot holds {} of WAL (current − restart_lsn)",
                kib(rr)
            );
        }
        let _ = writeln!(
            s,
            "\nfaults (detection: anchor → eviction, bound G + k·P with P = worst sweep gap {} ms; WAL back below {} by bound + {} ms)",
            self.sweeps.max_gap_ms,
            kib(self.threshold),
            self.slack_ms
        );
        for f in &self.faults {
            let rec = &f.record;
            let evicted = match rec.evicted {
                Some((_, why)) => format!(
                    "evicted {:<8} after {:>5} ms (bound {} ms, nominal {} ms)",
                    why.as_str(),
                    opt(f.detect_ms),
                    f.bound_ms,
                    f.bound_nominal_ms
                ),
                None if rec.planned.kind.pins() => "NOT evicted".to_owned(),
                None => "not evicted".to_owned(),
            };
            let wal = if rec.planned.kind.pins() {
                format!(
                    "; WAL peak {}, back below after {} (deadline {} ms)",
                    kib(f.peak_retained),
                    f.recovered_ms
                        .map_or_else(|| "never".to_owned(), |t| format!("{t} ms")),
                    f.recover_deadline_ms
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                s,
                "  {:<5} writer {:>6} at {:>6} ms: {evicted}{wal} {}",
                rec.planned.kind.as_str(),
                rec.planned.writer,
                rec.applied_ms.unwrap_or(rec.planned.at_ms),
                if f.ok && f.wal_ok {
                    "ok"
                } else if self.electric() {
                    "(electric)"
                } else {
                    "FAILED"
                }
            );
            if !f.detail.is_empty() {
                let _ = writeln!(s, "        {}", f.detail);
            }
        }
        let _ = writeln!(
            s,
            "  sweeps {}, challenges {}, evictions {} (invalidated: buffers stopped, {} messages handed back), backlog steps {}",
            self.sweeps.sweeps,
            self.sweeps.challenges,
            self.evictions.len(),
            self.evictions.iter().map(|e| e.handed_back).sum::<u64>(),
            self.sweeps.backlog_steps
        );
        let m = &self.messages;
        let st = &self.store;
        let _ = writeln!(
            s,
            "\nmessages\n  offered {}  accepted {}  delivered {}  handed back {} ({} outcome unknown)  returned {}  lost {}",
            m.offered,
            m.accepted,
            m.delivered,
            m.handed_back,
            m.in_flight_unknown,
            m.returned,
            m.lost()
        );
        let _ = writeln!(
            s,
            "  stores: {} rows, {} duplicate records, {} malformed lines",
            st.stored, st.duplicates, st.malformed
        );
        let _ = writeln!(s, "\nchecks");
        for ch in self.checks() {
            let tag = match (ch.ok, ch.required) {
                (true, _) => "ok",
                (false, true) => "FAIL",
                (false, false) => "info",
            };
            let _ = writeln!(s, "  [{tag}] {}: {}", ch.name, ch.detail);
        }
        if self.electric() {
            let _ = writeln!(
                s,
                "  (electric: no staleness sweeps, so a killed or wedged writer pins the slot for \
                 good; [info] checks show that and do not fail the run)"
            );
        }
        let _ = writeln!(s, "\n{}", if self.passed() { "PASSED" } else { "FAILED" });
        s
    }

    /// The report as JSON.
    fn json(&self) -> Value {
        let c = &self.config;
        let faults: Vec<Value> = self
            .faults
            .iter()
            .map(|f| {
                let r = &f.record;
                json!({
                    "kind": r.planned.kind.as_str(),
                    "writer": r.planned.writer,
                    "at_ms": r.planned.at_ms,
                    "applied_ms": r.applied_ms,
                    "anchor_ms": r.anchor_ms,
                    "evicted_ms": r.evicted.map(|e| e.0),
                    "evicted_reason": r.evicted.map(|e| e.1.as_str()),
                    "detect_ms": f.detect_ms,
                    "bound_ms": f.bound_ms,
                    "bound_nominal_ms": f.bound_nominal_ms,
                    "peak_retained_bytes": f.peak_retained,
                    "recovered_ms": f.recovered_ms,
                    "recover_deadline_ms": f.recover_deadline_ms,
                    "ok": f.ok,
                    "wal_ok": f.wal_ok,
                    "detail": f.detail,
                })
            })
            .collect();
        let checks: Vec<Value> = self
            .checks()
            .iter()
            .map(|ch| json!({"name": ch.name, "ok": ch.ok, "required": ch.required, "detail": ch.detail}))
            .collect();
        let m = &self.messages;
        let st = &self.store;
        json!({
            "passed": self.passed(),
            "tracker": c.tracker.as_str(),
            "server_version": self.server,
            "slot": c.slot,
            "created_slot": self.created_slot,
            "config": {
                "writers": c.common.writers, "workers": c.common.workers, "rate": c.rate,
                "duration_ms": c.common.duration.as_millis() as u64, "grace_ms": c.common.grace_ms,
                "sweep_ms": c.common.sweep_ms, "status_ms": c.status_ms, "latency_ms": c.latency_ms,
                "slow_ms": c.common.slow_ms, "fsync": c.fsync, "seed": c.common.seed, "noise": c.noise,
            },
            "load": {
                "seconds": self.load.0, "transactions": self.load.1, "noise_transactions": self.load.2,
                "rows": self.load.3, "anchors": self.load.4, "errors": self.load.5,
            },
            "stream": {
                "commits": self.stream.0, "rows": self.stream.1, "keepalives": self.stream.2,
                "keepalives_queued": self.stream.3, "status_updates": self.stream.4,
            },
            "wal": {
                "written_bytes": self.wal_bytes, "rate_bytes_per_s": self.wal_rate,
                "retained_p50": self.retained.p50, "retained_p90": self.retained.p90,
                "retained_p99": self.retained.p99, "retained_max": self.retained.max,
                "threshold_bytes": self.threshold, "slack_ms": self.slack_ms,
                "final_retained_restart": self.final_retained_restart,
            },
            "start_lsn": lsn_str(self.start_lsn),
            "final_confirmed": lsn_str(self.final_confirmed),
            "fence_end": self.fence.map(|f| lsn_str(f.1)),
            "last_applied": lsn_str(self.last_applied),
            "observer": {"samples": self.observer.0, "violations": self.observer.1, "regressions": self.observer.2},
            "faults": faults,
            "evictions": self.evictions.iter().map(|e| json!({
                "writer": e.writer, "reason": e.reason.as_str(), "at_ms": e.at_ms,
                "fault": e.fault.map(|f| f.as_str()), "handed_back": e.handed_back,
            })).collect::<Vec<_>>(),
            "sweeps": {"count": self.sweeps.sweeps, "max_gap_ms": self.sweeps.max_gap_ms, "challenges": self.sweeps.challenges},
            "messages": {
                "offered": m.offered, "accepted": m.accepted, "delivered": m.delivered,
                "handed_back": m.handed_back, "in_flight_unknown": m.in_flight_unknown,
                "handed_back_live": m.handed_back_live, "failed": m.failed, "returned": m.returned,
                "lost": m.lost() as i64,
            },
            "store": {
                "stored_rows": st.stored, "confirmed_rows": st.confirmed_rows,
                "confirmed_missing": st.confirmed_missing, "generated": st.generated,
                "not_streamed": st.not_streamed, "live_rows": st.live_rows,
                "live_missing": st.live_missing, "dead_rows": st.dead_rows,
                "duplicates": st.duplicates, "malformed": st.malformed,
            },
            "errors": self.errors.0,
            "checks": checks,
            "samples": self.samples.iter().map(|x| json!({
                "t_ms": x.t_ms,
                "current": lsn_str(x.slot.current),
                "confirmed": lsn_str(x.slot.confirmed),
                "restart": lsn_str(x.slot.restart),
                "active": x.slot.active,
                "retained_bytes": x.slot.retained,
                "retained_restart_bytes": x.slot.retained_restart,
                "newest_commit_end": x.newest_end.map(lsn_str),
                "ack_target": lsn_str(x.target),
                "observer_bound": x.bound.map(lsn_str),
            })).collect::<Vec<_>>(),
            "total_s": self.total_s,
        })
    }
}

impl Report {
    fn electric(&self) -> bool {
        self.config.tracker == TrackerKind::Electric
    }

    /// The checks; the run passes when every required one passes.
    pub(crate) fn checks(&self) -> Vec<Check> {
        let tidemark = !self.electric();
        let (samples, violations, regressions, first) = self.observer;
        let st = &self.store;
        let m = &self.messages;
        let pinning: Vec<&FaultOutcome> = self
            .faults
            .iter()
            .filter(|f| f.record.planned.kind.pins())
            .collect();
        let end_ok = self
            .fence
            .is_some_and(|(_, end)| self.final_confirmed == end);
        let reported = self.marked_evicted == self.evictions.len() as u64
            && self
                .tracker_evictions
                .is_none_or(|n| n == self.evictions.len() as u64);
        let errors = &self.errors;
        vec![
            Check {
                name: "slot never confirmed past a change some writer had not stored",
                ok: violations == 0 && regressions == 0 && samples > 0,
                required: true,
                detail: match first {
                    None => format!(
                        "{samples} samples, {violations} violations, {regressions} regressions"
                    ),
                    Some((t, c, b)) => format!(
                        "{violations} violations in {samples} samples; first at {t} ms: \
                         confirmed {} > bound {}",
                        lsn_str(c),
                        lsn_str(b)
                    ),
                },
            },
            Check {
                name: "changes below the final confirmed LSN are in every non-evicted writer's store",
                ok: st.confirmed_missing == 0
                    && st.unreadable == 0
                    && st.malformed == 0
                    && reported,
                required: true,
                detail: format!(
                    "{} rows below {}, {} missing{}; evictions {} reported, {} marked{}",
                    st.confirmed_rows,
                    lsn_str(self.final_confirmed),
                    st.confirmed_missing,
                    st.first_missing.map_or(String::new(), |(l, w)| format!(
                        " (first: commit {} to writer {w})",
                        lsn_str(l)
                    )),
                    self.evictions.len(),
                    self.marked_evicted,
                    self.tracker_evictions
                        .map_or(String::new(), |n| format!(", {n} counted by the tracker"))
                ),
            },
            Check {
                name: "no change lost for live writers",
                ok: st.live_missing == 0 && st.not_streamed == 0 && st.generated > 0,
                required: true,
                detail: format!(
                    "{} rows generated, {} not streamed; {} to live writers, {} missing; {} to \
                     dead writers",
                    st.generated, st.not_streamed, st.live_rows, st.live_missing, st.dead_rows
                ),
            },
            Check {
                name: "retained WAL back below the threshold within the bound after each fault",
                ok: pinning.iter().all(|f| f.wal_ok),
                required: tidemark,
                detail: format!(
                    "{} of {} kills/wedges; threshold {}, deadline = G + k·P + {} ms slack",
                    pinning.iter().filter(|f| f.wal_ok).count(),
                    pinning.len(),
                    kib(self.threshold),
                    self.slack_ms
                ),
            },
            Check {
                name: "kills and wedges evicted for the right reason within G + k·P",
                ok: self.faults.iter().all(|f| f.ok),
                required: tidemark,
                detail: format!(
                    "{} of {} faults as specified",
                    self.faults.iter().filter(|f| f.ok).count(),
                    self.faults.len()
                ),
            },
            Check {
                name: "no healthy or slow writer evicted",
                ok: self.bad_evictions == BadEvictions::default(),
                required: true,
                detail: format!(
                    "healthy {}, slow {}",
                    self.bad_evictions.healthy, self.bad_evictions.slow
                ),
            },
            Check {
                name: "after the graceful stop the slot's confirmed LSN is the last streamed commit",
                ok: end_ok,
                required: tidemark || pinning.is_empty(),
                detail: match self.fence {
                    Some((c, end)) => format!(
                        "last commit (the stop fence) {} ends at {}; confirmed {}",
                        lsn_str(c),
                        lsn_str(end),
                        lsn_str(self.final_confirmed)
                    ),
                    None => "the stop fence was never streamed".to_owned(),
                },
            },
            Check {
                name: "messages balance, zero lost; live writers handed nothing back",
                ok: m.balanced() && m.handed_back_live == 0,
                required: true,
                detail: format!(
                    "offered {} = delivered {} + handed back {} + failed {} + returned {} \
                     (lost {}); live writers handed back {}",
                    m.offered,
                    m.delivered,
                    m.handed_back,
                    m.failed,
                    m.returned,
                    m.lost(),
                    m.handed_back_live
                ),
            },
            Check {
                name: "no stream, store, link or load errors",
                ok: errors.0.is_empty()
                    && errors.1 == 0
                    && errors.2 == 0
                    && errors.3 == 0
                    && self.load.5 == 0,
                required: true,
                detail: format!(
                    "run errors {}, store errors {}, link errors {}, late acks {}, load errors \
                     {}{}",
                    errors.0.len(),
                    errors.1,
                    errors.2,
                    errors.3,
                    self.load.5,
                    errors
                        .0
                        .first()
                        .or(self.load.6.as_ref())
                        .map_or(String::new(), |e| format!(" (first: {e})"))
                ),
            },
        ]
    }
}
