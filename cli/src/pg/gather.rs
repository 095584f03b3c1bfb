//! After the run: closes what is still open (buffers of dead writers, spill queues), reads the
//! stores back, and gathers every figure into a [`Report`]. Judging is in `report.rs`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::config::FaultKind;
use super::decode::Row;
use super::faults::Record;
use super::load::LoadLog;
use super::observer::Observer;
use super::pipeline::{Shared, WorkerCounters};
use super::report::{BadEvictions, FaultOutcome, Report, SLACK_MARGIN_MS, StoreCheck};
use super::sampler::{SAMPLE_EVERY, Sample};
use super::sql::Setup;
use super::store;
use super::stream::StreamSummary;
use crate::pipeline_common::report::{Messages, percentiles};

/// The WAL-return threshold is the WAL the load writes in this fraction of the grace period
/// (a quarter: a writer pinned for a whole grace period retains four times as much), and never
/// below [`MIN_THRESHOLD`].
const THRESHOLD_GRACE_FRACTION: f64 = 0.25;
/// The smallest WAL-return threshold (bytes).
const MIN_THRESHOLD: i64 = 64 << 10;

/// Builds the report. Call after every thread and task ended.
pub(crate) fn report(
    sh: &Shared,
    setup: &Setup,
    load: LoadLog,
    summary: StreamSummary,
    observer: Observer,
    wall: Instant,
) -> Report {
    let cfg = &sh.cfg;
    let messages = messages(sh);
    let samples: Vec<Sample> = sh.samples.lock().unwrap().clone();
    let final_confirmed = samples.last().map_or(setup.start_lsn, |s| s.slot.confirmed);
    let store = store_check(sh, &load, final_confirmed);

    let wal_bytes = load.wal.1.saturating_sub(load.wal.0);
    let wal_rate = wal_bytes as f64 / load.elapsed_s.max(1e-9);
    let threshold = ((wal_rate * cfg.common.grace_ms as f64 / 1000.0 * THRESHOLD_GRACE_FRACTION)
        as i64)
        .max(MIN_THRESHOLD);
    // The deadline after the detection bound: the acker's poll, one status interval, one sample
    // period, and a fixed margin for a loaded machine (docs/PG.md).
    let slack_ms = SLACK_MARGIN_MS + cfg.status_ms + SAMPLE_EVERY.as_millis() as u64;

    let sweeps = sh.host.sweeps.lock().unwrap().clone();
    let p_eff = cfg.common.sweep_ms.max(sweeps.max_gap_ms);
    let evictions = sh.evictions.lock().unwrap().clone();
    let records = sh.faults.lock().unwrap().clone();
    let faults: Vec<FaultOutcome> = records
        .iter()
        .enumerate()
        .map(|(k, rec)| {
            let w = Window {
                samples: &samples,
                others: &records,
                me: k,
                threshold,
                slack_ms,
                p_eff,
            };
            fault_outcome(sh, rec.clone(), &w)
        })
        .collect();

    let tracker_evictions = sh.source.tracker().map(|t| {
        let st = t.stats(sh.now_ms());
        st.evicted_crashed + st.evicted_orphaned + st.evicted_stalled
    });
    let marked_evicted = sh
        .host
        .writers
        .iter()
        .filter(|w| w.evicted.load(Ordering::SeqCst))
        .count() as u64;
    let mut bad_evictions = BadEvictions::default();
    for e in &evictions {
        match e.fault {
            None => bad_evictions.healthy += 1,
            Some(FaultKind::Slow) => bad_evictions.slow += 1,
            Some(_) => {}
        }
    }
    let retained = percentiles(samples.iter().map(|s| s.slot.retained).collect());
    let errors = sh.errors.lock().unwrap().clone();
    let sum = |f: fn(&WorkerCounters) -> &std::sync::atomic::AtomicU64| sh.host.work_sum(f);
    let d = &sh.disp;
    Report {
        config: cfg.clone(),
        server: setup.server_version.clone(),
        created_slot: setup.created_slot,
        created_publication: setup.created_publication,
        store_dir: sh.store.dir().display().to_string(),
        start_lsn: setup.start_lsn,
        load: (
            load.elapsed_s,
            load.txns,
            load.noise_txns,
            load.rows.len() as u64,
            load.anchors,
            // A refused CHECKPOINT (no privilege) only costs the restart_lsn figure.
            load.errors + u64::from(load.fence.is_err()),
            load.first_error
                .clone()
                .or_else(|| load.fence.as_ref().err().cloned()),
        ),
        wal_bytes,
        wal_rate,
        stream: (
            d.commits.load(Ordering::Relaxed),
            d.rows.load(Ordering::Relaxed),
            d.keepalives.load(Ordering::Relaxed),
            d.keepalives_queued.load(Ordering::Relaxed),
            summary.feedback_sent,
        ),
        stored: (sum(|c| &c.batches), sum(|c| &c.storage.bytes)),
        fence: *sh.fence.lock().unwrap(),
        final_confirmed,
        last_applied: summary.last_applied,
        retained,
        threshold,
        slack_ms,
        final_retained_restart: samples.last().map(|s| s.slot.retained_restart),
        observer: (
            observer.samples,
            observer.violations,
            observer.regressions,
            observer.first_violation,
        ),
        faults,
        evictions,
        tracker_evictions,
        marked_evicted,
        bad_evictions,
        sweeps,
        rows_invalidated: d.rows_invalidated.load(Ordering::Relaxed),
        messages,
        store,
        errors: (
            errors,
            sum(|c| &c.storage.store_errors),
            sum(|c| &c.link_errors),
            sum(|c| &c.late_acks),
        ),
        samples,
        stop_ms: match sh.stop_ms.load(Ordering::Relaxed) {
            0 => None,
            t => Some(t),
        },
        total_s: wall.elapsed().as_secs_f64(),
    }
}

/// Stops every buffer (a drained one returns its report again; a dead writer's hands back what
/// it held) and returns the spill queues: every offered message ends in one outcome.
fn messages(sh: &Shared) -> Messages {
    let mut m = Messages {
        offered: sh.disp.offered.load(Ordering::Relaxed),
        ..Messages::default()
    };
    let end = WorkerCounters::default();
    let now = sh.host.clock.now();
    for w in &sh.host.writers {
        w.return_spill(&end.returned);
        let r = w.buffer.stop(now);
        m.add(&r, w.mode.load().live());
    }
    m.returned = sh.disp.returned.load(Ordering::Relaxed)
        + sh.host.work_sum(|c| &c.returned)
        + end.returned.load(Ordering::Relaxed);
    m
}

/// Reads every store back and compares it with the stream and the load generator's log.
fn store_check(sh: &Shared, load: &LoadLog, final_confirmed: u64) -> StoreCheck {
    let n = sh.cfg.common.writers;
    let mut st = StoreCheck::default();
    let mut stored: Vec<HashSet<(u64, Row)>> = Vec::with_capacity(n);
    let mut rows_of: Vec<HashSet<Row>> = Vec::with_capacity(n);
    for w in 0..n as u32 {
        match sh.store.read(w) {
            Ok((recs, bad)) => {
                st.malformed += bad;
                st.stored += recs.len() as u64;
                let (set, dups) = store::row_set(&recs);
                st.duplicates += dups;
                rows_of.push(set);
                stored.push(recs.into_iter().collect());
            }
            Err(_) => {
                st.unreadable += 1;
                rows_of.push(HashSet::new());
                stored.push(HashSet::new());
            }
        }
    }
    let evicted: Vec<bool> = sh
        .host
        .writers
        .iter()
        .map(|w| w.evicted.load(Ordering::SeqCst))
        .collect();
    let alive: Vec<bool> = sh
        .host
        .writers
        .iter()
        .map(|w| w.mode.load().live())
        .collect();
    // Every change at or below the final confirmed position (a commit is confirmed when its
    // end is) must be in the store of every writer it went to, unless that writer was evicted.
    let commits = sh.commits.lock().unwrap();
    let mut streamed: HashMap<Row, u64> = HashMap::new();
    for c in commits.iter() {
        for r in &c.rows {
            streamed.insert(*r, c.commit_lsn);
        }
        if c.end_lsn > final_confirmed {
            continue;
        }
        for &w in &c.delivered {
            if evicted[w as usize] {
                continue;
            }
            for r in c.rows.iter().filter(|r| r.writer(n) == w) {
                st.confirmed_rows += 1;
                if !stored[w as usize].contains(&(c.commit_lsn, *r)) {
                    st.confirmed_missing += 1;
                    st.first_missing.get_or_insert((c.commit_lsn, w));
                }
            }
        }
    }
    // Every change the load committed was streamed, and is stored by its writer if that writer
    // is alive at the end.
    for r in &load.rows {
        st.generated += 1;
        if !streamed.contains_key(r) {
            st.not_streamed += 1;
        }
        let w = r.writer(n) as usize;
        if alive[w] {
            st.live_rows += 1;
            if !rows_of[w].contains(r) {
                st.live_missing += 1;
            }
        } else {
            st.dead_rows += 1;
        }
    }
    st
}

/// What a fault is judged against.
struct Window<'a> {
    samples: &'a [Sample],
    /// Every fault, this one at `me`.
    others: &'a [Record],
    me: usize,
    threshold: i64,
    slack_ms: u64,
    /// The sweep period the bound uses: the nominal one or the worst observed gap.
    p_eff: u64,
}

/// One fault against its bound, and the retained WAL around it.
///
/// Recovery is the first sample after the eviction with retained WAL below the threshold. When
/// another kill or wedge was applied before this fault's deadline, that one may hold the slot
/// itself, so recovery is instead the first sample after the eviction whose confirmed position
/// passed this fault's anchor commit (this writer no longer holds the slot).
fn fault_outcome(sh: &Shared, record: Record, w: &Window<'_>) -> FaultOutcome {
    let Window {
        samples,
        threshold,
        slack_ms,
        p_eff,
        ..
    } = *w;
    let cfg = &sh.cfg;
    let kind = record.planned.kind;
    let k = kind.bound_sweeps();
    let bound_nominal_ms = cfg.common.grace_ms + k * cfg.common.sweep_ms;
    let bound_ms = cfg.common.grace_ms + k * p_eff;
    let recover_deadline_ms = bound_ms + slack_ms;
    let detect_ms = match (record.anchor_ms, record.evicted) {
        (Some(a), Some((e, _))) => Some(e.saturating_sub(a)),
        _ => None,
    };
    let from = record.applied_ms.unwrap_or(record.planned.at_ms);
    let deadline_at = record.anchor_ms.unwrap_or(from) + recover_deadline_ms;
    let overlapped_by = w.others.iter().enumerate().find(|&(j, o)| {
        j != w.me
            && o.planned.kind.pins()
            && o.applied_ms.is_some_and(|t| t >= from && t <= deadline_at)
    });
    let recovered_at = record.evicted.and_then(|(e, _)| {
        samples
            .iter()
            .find(|s| {
                s.t_ms >= e
                    && match overlapped_by {
                        None => s.slot.retained < threshold,
                        Some(_) => {
                            s.slot.retained < threshold
                                || record.anchor_lsn.is_some_and(|a| s.slot.confirmed > a)
                        }
                    }
            })
            .map(|s| s.t_ms)
    });
    let until = recovered_at.unwrap_or(u64::MAX);
    let peak_retained = samples
        .iter()
        .filter(|s| s.t_ms >= from && s.t_ms <= until)
        .map(|s| s.slot.retained)
        .max()
        .unwrap_or(0);
    let recovered_ms = match (recovered_at, record.anchor_ms) {
        (Some(t), Some(a)) => Some(t.saturating_sub(a)),
        _ => None,
    };
    let mut detail = Vec::new();
    if let Some((_, o)) = overlapped_by {
        detail.push(format!(
            "overlapped by the {} at {} ms: recovery = confirmed past its anchor commit",
            o.planned.kind.as_str(),
            o.applied_ms.unwrap_or(o.planned.at_ms)
        ));
    }
    let ok = match (record.expected(), record.evicted) {
        (None, None) => true,
        (None, Some((_, why))) => {
            detail.push(format!("evicted {} but it was only slow", why.as_str()));
            false
        }
        (Some(want), None) => {
            detail.push(format!("never evicted (expected {})", want.as_str()));
            false
        }
        (Some(want), Some((_, why))) => {
            let mut ok = true;
            if why != want {
                detail.push(format!(
                    "evicted {} (expected {})",
                    why.as_str(),
                    want.as_str()
                ));
                ok = false;
            }
            match detect_ms {
                Some(d) if d <= bound_ms => {}
                Some(d) => {
                    detail.push(format!("detected after {d} ms > bound {bound_ms} ms"));
                    ok = false;
                }
                None => {
                    detail.push("no anchor commit was dispatched to it".to_owned());
                    ok = false;
                }
            }
            ok
        }
    };
    let wal_ok = if kind.pins() {
        match recovered_ms {
            Some(t) if t <= recover_deadline_ms => true,
            Some(t) => {
                detail.push(format!(
                    "retained WAL back below the threshold only after {t} ms > {recover_deadline_ms} ms"
                ));
                false
            }
            None => {
                detail.push("retained WAL never came back below the threshold".to_owned());
                false
            }
        }
    } else {
        true
    };
    FaultOutcome {
        record,
        detect_ms,
        bound_nominal_ms,
        bound_ms,
        peak_retained,
        recovered_ms,
        recover_deadline_ms,
        ok,
        wal_ok,
        detail: detail.join("; "),
    }
}
