//! `tidemark simulate`: a replication pipeline under faults, on the real library, watched live.
//!
//! - [`config`]: flags and the seeded random numbers.
//! - [`pipeline`]: the threads (sequencer, workers with their writers' batch buffers and the
//!   storage sink, sweeper, observer sampler) and what they share.
//! - [`faults`]: the fault plan and what happened to each fault.
//! - [`observer`]: the independent safe-bound check.
//! - [`report`], [`chart`], [`progress`]: output.
//!
//! The run: build the tracker and one buffer per writer; start the threads; the controller
//! (this thread) injects faults on schedule and draws progress; after `--duration` the
//! sequencer stops, the workers drain every live writer (admission closes, everything is
//! flushed), the sweeper evicts what is left of the faults, and the run waits until the ack
//! equals the last commit. Then every buffer's stop report is summed and checked.

mod chart;
mod config;
mod faults;
mod observer;
mod pipeline;
mod progress;
mod report;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tidemark::batch::{Clock, SystemClock};

use crate::common::Rng;
use crate::pipeline_common::report::{Messages, opt, percentiles};
use crate::pipeline_common::{self, worker::Worker};
use config::Config;
use faults::{FaultKind, Record};
use pipeline::{Cmd, FaultCmd, Shared, Sink};
use progress::Progress;
use report::{BadEvictions, FaultOutcome, Report, SinkTally};

/// Runs `tidemark simulate` with the arguments after the subcommand.
pub(crate) fn main(args: &[String]) -> ExitCode {
    pipeline_common::main(args, config::HELP, run)
}

/// Resident memory of this process (Linux), in bytes.
fn rss() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Runs the simulation and gathers the report.
fn run(cfg: Config) -> Result<Report, String> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let plan = faults::plan(&cfg, &mut Rng::new(cfg.common.seed, 0));
    let records: Vec<Record> = plan.into_iter().map(Record::new).collect();
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..cfg.common.workers).map(|_| mpsc::channel()).unzip();
    let wall = Instant::now();
    let rss0 = rss();
    let sh = Shared::new(cfg.clone(), clock, records, senders)?;
    let setup_rss = rss().zip(rss0).map(|(a, b)| a.saturating_sub(b));
    let setup_ms = wall.elapsed().as_millis() as u64;
    let mut progress =
        Progress::new(cfg.common.progress && !cfg.common.json && std::io::stdout().is_terminal());

    // Fault actions in time order: (ms after start, worker command).
    let mut actions: Vec<(u64, usize, bool)> = Vec::new();
    for (k, r) in sh.faults.lock().unwrap().iter().enumerate() {
        actions.push((r.planned.at_ms, k, false));
        if let Some(until) = r.planned.until_ms {
            actions.push((until, k, true));
        }
    }
    actions.sort();

    let sh = &sh;
    let (last_tx, produce_s, drain_ms, observer, samples) = std::thread::scope(|s| {
        let sampler = s.spawn(|| pipeline::sampler(sh));
        let sweeper = s.spawn(|| pipeline::sweeper(sh));
        let workers: Vec<_> = receivers
            .into_iter()
            .enumerate()
            .map(|(k, rx)| {
                s.spawn(move || Worker::new(sh.host.shard_of(k), Sink::new(sh, k)).run(rx))
            })
            .collect();
        let produce_start = Instant::now();
        let sequencer = s.spawn(|| pipeline::sequencer(sh));
        let duration_ms = cfg.common.duration.as_millis() as u64;
        let mut next = 0;
        loop {
            let elapsed = produce_start.elapsed().as_millis() as u64;
            while next < actions.len() && actions[next].0 <= elapsed {
                let (_, k, resume) = actions[next];
                let writer = sh.faults.lock().unwrap()[k].planned.writer;
                let cmd = Cmd::Fault(if resume {
                    FaultCmd::Resume(k)
                } else {
                    FaultCmd::Apply(k)
                });
                let _ = sh.senders[writer as usize % cfg.common.workers].send(cmd);
                next += 1;
            }
            if elapsed >= duration_ms || sequencer.is_finished() {
                break;
            }
            progress.tick(sh, "producing");
            let until_next = actions
                .get(next)
                .map_or(50, |a| a.0.saturating_sub(elapsed));
            let until_end = duration_ms - elapsed;
            std::thread::sleep(Duration::from_millis(
                until_next.min(until_end).clamp(1, 50),
            ));
        }
        sh.stop_sequencer.store(true, Ordering::Relaxed);
        let last_tx = sequencer.join().expect("sequencer panicked");
        let produce_s = produce_start.elapsed().as_secs_f64();
        let drain_start = Instant::now();
        for tx in &sh.senders {
            let _ = tx.send(Cmd::Drain);
        }
        while !workers.iter().all(|w| w.is_finished()) {
            progress.tick(sh, "draining");
            std::thread::sleep(Duration::from_millis(10));
        }
        for w in workers {
            w.join().expect("worker panicked");
        }
        // Faults not yet evicted resolve within G + 2P of their anchor; allow the sweeper that
        // (and a margin for a loaded machine) before giving up on the final ack.
        let wait = Duration::from_millis(cfg.common.grace_ms + 2 * cfg.common.sweep_ms)
            + Duration::from_secs(2);
        let until = Instant::now() + wait;
        while sh.tracker.ack() != Some(last_tx) && Instant::now() < until {
            progress.tick(sh, "final ack");
            std::thread::sleep(Duration::from_millis(5));
        }
        let drain_ms = drain_start.elapsed().as_millis() as u64;
        // Let the sampler take a sample of the settled state before stopping it.
        std::thread::sleep(pipeline::SAMPLE_EVERY * 2);
        sh.host.stop_background.store(true, Ordering::Relaxed);
        let (observer, samples) = sampler.join().expect("sampler panicked");
        sweeper.join().expect("sweeper panicked");
        (last_tx, produce_s, drain_ms, observer, samples)
    });
    progress.finish();

    // Every buffer's report: a stop on a closed buffer returns its report; any buffer still
    // open (a live writer that did not drain) hands everything back now, which the checks flag.
    let mut m = Messages::default();
    let now = sh.host.clock.now();
    for w in &sh.host.writers {
        let r = w.buffer.stop(now);
        let live = w.mode.load().live();
        m.add(&r, live);
        // Anything still in a spill queue goes back to the host.
        let left = w.drain_spill();
        m.returned += left;
        if live {
            m.handed_back_live += left;
        }
    }
    m.offered = sh.seq.offered.load(Ordering::Relaxed);
    m.returned += sh.host.work_sum(|c| &c.returned);
    let sink = SinkTally {
        delivered: sh.host.work_sum(|c| &c.delivered),
        requeued_batches: sh.host.work_sum(|c| &c.storage.nacks),
        order_violations: sh.host.work_sum(|c| &c.storage.order_violations),
    };

    let sweeps = sh.host.sweeps.lock().unwrap().clone();
    let p_eff = cfg.common.sweep_ms.max(sweeps.max_gap_ms);
    let faults: Vec<FaultOutcome> = sh
        .faults
        .lock()
        .unwrap()
        .iter()
        .map(|r| judge(r, &cfg, p_eff))
        .collect();
    let evictions = sh.evictions.lock().unwrap().clone();
    let mut bad = BadEvictions::default();
    for e in &evictions {
        match e.fault {
            Some(FaultKind::Kill) | Some(FaultKind::Wedge) => {}
            None => bad.healthy += 1,
            Some(FaultKind::Slow) => bad.slow += 1,
            Some(FaultKind::Pause) => bad.paused += 1,
        }
    }
    let duration_ms = cfg.common.duration.as_millis() as u64;
    let lags = samples
        .iter()
        .filter(|s| s.t_ms <= duration_ms)
        .map(|s| s.last_tx.unwrap_or(0).saturating_sub(s.ack.unwrap_or(0)))
        .collect();
    let last = samples.last().copied();
    let st = sh.tracker.stats(sh.now_ms());
    // Counted, not sampled: every buffer's fixed part plus the rings and arenas that traffic
    // allocated (an idle buffer allocates none).
    let buffer_bytes = sh
        .host
        .writers
        .iter()
        .map(|w| w.buffer.memory_bytes())
        .sum();
    Ok(Report {
        buffer_bytes,
        start_ms: sh.start_ms,
        setup_ms,
        setup_rss,
        produce_s,
        drain_ms,
        total_s: wall.elapsed().as_secs_f64(),
        commits: sh.seq.commits.load(Ordering::Relaxed),
        last_tx,
        flushes: st.flushes,
        batches: sh.host.work_sum(|c| &c.batches),
        commit_retries: sh.seq.retries.load(Ordering::Relaxed),
        throttled: sh.seq.throttled.load(Ordering::Relaxed),
        messages: m,
        sink,
        lag: percentiles(lags),
        observer,
        final_ack: last.and_then(|s| s.ack),
        final_bound: last.and_then(|s| s.bound),
        faults,
        evictions,
        bad_evictions: bad,
        sweeps,
        errors: (
            sh.host.work_sum(|c| &c.link_errors),
            sh.host.work_sum(|c| &c.late_acks),
            sh.seq.commit_errors.load(Ordering::Relaxed),
        ),
        first_error: sh.first_error.lock().unwrap().clone(),
        samples,
        config: cfg,
    })
}

/// Judges one fault against the specification.
fn judge(r: &Record, cfg: &Config, p_eff: u64) -> FaultOutcome {
    let kind = r.planned.kind;
    let mut out = FaultOutcome {
        record: r.clone(),
        detect_ms: None,
        bound_nominal_ms: None,
        bound_ms: None,
        ok: true,
        detail: String::new(),
    };
    if r.applied_ms.is_none() {
        out.ok = false;
        out.detail = "never applied".into();
        return out;
    }
    match kind.expected_eviction() {
        Some(reason) => {
            let k = kind.bound_sweeps();
            out.bound_nominal_ms = Some(cfg.common.grace_ms + k * cfg.common.sweep_ms);
            out.bound_ms = Some(cfg.common.grace_ms + k * p_eff);
            let from = r.anchor_ms.or(r.applied_ms).expect("applied");
            match r.evicted {
                None => {
                    out.ok = false;
                    out.detail = "never evicted".into();
                }
                Some((at, why)) => {
                    let d = at.saturating_sub(from);
                    out.detect_ms = Some(d);
                    if why != reason {
                        out.ok = false;
                        out.detail =
                            format!("evicted as {}, expected {}", why.as_str(), reason.as_str());
                    } else if Some(d) > out.bound_ms {
                        out.ok = false;
                        out.detail = format!(
                            "detection {d} ms exceeds the bound {} ms",
                            opt(out.bound_ms)
                        );
                    }
                }
            }
        }
        None => {
            if let Some((_, why)) = r.evicted {
                out.ok = false;
                out.detail = format!("must not be evicted, was evicted as {}", why.as_str());
            }
        }
    }
    out
}
