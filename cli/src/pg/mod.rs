//! `tidemark pg`: a real PostgreSQL logical slot, streamed into writers and acknowledged with
//! the tracker's ack, under faults, watched live (docs/PG.md).
//!
//! - [`config`]: flags. [`sql`]: setup, slot readings, fence (tokio-postgres).
//! - [`stream`]: the replication connection (pgwire-replication). [`decode`]: pgoutput rows.
//! - [`pipeline`]: shared state, the dispatcher, the acker and the sweeper; [`worker`]: the
//!   storage workers; [`store`]: the append-only files; [`source`]: tidemark or Electric.
//! - [`ack`]: ack → flush LSN. [`observer`] + [`sampler`]: the independent safety check.
//! - [`load`]: the load generator. [`faults`]: the fault plan.
//! - [`gather`], [`report`], [`chart`], [`progress`]: the outcome.
//!
//! The run: connect and set up; start the stream (it must be accepted before anything else
//! starts), the tidemark threads (dispatcher, workers, acker, sweeper) and the async tasks
//! (sampler, load). The controller (this thread) injects faults on schedule and draws
//! progress. After `--duration` the load stops, writes a CHECKPOINT and the fence; once the
//! fence is streamed and acknowledged (and the server shows it confirmed), the stream ends,
//! the workers drain, and the stores are checked against the stream and the load's own log.

mod ack;
mod chart;
mod config;
mod decode;
mod faults;
mod gather;
mod load;
mod observer;
mod pipeline;
mod progress;
mod report;
mod sampler;
mod source;
mod sql;
mod store;
mod stream;
mod worker;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tidemark::batch::{Clock, SystemClock};
use tokio::runtime::Runtime;
use tokio::sync::{oneshot, watch};

use crate::pipeline_common::{self, worker::Worker};
use config::Config;
use faults::Record;
use pipeline::{Cmd, Shared};
use progress::Progress;
use report::Report;
use sql::{Setup, Target};
use worker::FileSink;

/// Runs `tidemark pg` with the arguments after the subcommand.
pub(crate) fn main(args: &[String]) -> ExitCode {
    pipeline_common::main(args, config::HELP, run)
}

/// Connects, sets up, runs, and drops the slot again when this run created it.
fn run(cfg: Config) -> Result<Report, String> {
    let target = Target::parse(&cfg.url)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("tidemark-pg-io")
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let control = rt.block_on(sql::connect(&target))?;
    let setup = rt.block_on(sql::setup(&control, &cfg))?;
    let result = run_on(&rt, &cfg, &target, &setup);
    if setup.created_slot && !cfg.keep_slot {
        // A leftover slot retains WAL forever.
        if let Err(e) = rt.block_on(sql::drop_slot(&control, &cfg.slot, Duration::from_secs(10))) {
            eprintln!("tidemark: pg: {e}");
        }
    }
    result
}

/// Milliseconds to wait for the stop fence to be streamed.
const FENCE_WAIT: Duration = Duration::from_secs(20);

fn run_on(rt: &Runtime, cfg: &Config, target: &Target, setup: &Setup) -> Result<Report, String> {
    let wall = Instant::now();
    let store = store::Store::create(cfg.store_dir.as_deref(), cfg.fsync)
        .map_err(|e| format!("store directory: {e}"))?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let source = source::Source::new(cfg)?;
    let records: Vec<Record> = faults::plan(cfg).into_iter().map(Record::new).collect();
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..cfg.common.workers).map(|_| mpsc::channel()).unzip();
    let sh = Arc::new(Shared::new(
        cfg.clone(),
        clock,
        source,
        store,
        setup.start_lsn,
        records,
        senders,
    )?);

    // The stream first: nothing else starts unless the server accepted START_REPLICATION.
    let (ev_tx, ev_rx) = mpsc::channel();
    let (stream_stop, stream_stop_rx) = watch::channel(false);
    let (started_tx, started_rx) = oneshot::channel();
    let stream = rt.spawn(stream::run(
        Arc::clone(&sh),
        target.clone(),
        setup.start_lsn,
        ev_tx,
        stream_stop_rx,
        started_tx,
    ));
    match rt.block_on(started_rx) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err("the replication task ended before it started".into()),
    }
    let sampler_client = rt.block_on(sql::connect(target))?;
    let load_client = rt.block_on(sql::connect(target))?;
    let (sample_stop, sample_stop_rx) = watch::channel(false);
    let (load_stop, load_stop_rx) = watch::channel(false);

    let mut progress =
        Progress::new(cfg.common.progress && !cfg.common.json && std::io::stdout().is_terminal());
    let times: Vec<(u64, usize)> = {
        let f = sh.faults.lock().unwrap();
        f.iter()
            .enumerate()
            .map(|(k, r)| (r.planned.at_ms, k))
            .collect()
    };

    let shr = &*sh;
    let outcome = std::thread::scope(|s| {
        let dispatcher = s.spawn(move || pipeline::dispatcher(shr, ev_rx));
        let workers: Vec<_> = receivers
            .into_iter()
            .enumerate()
            .map(|(k, rx)| {
                s.spawn(move || Worker::new(shr.host.shard_of(k), FileSink::new(shr, k)).run(rx))
            })
            .collect();
        let acker = s.spawn(|| pipeline::acker(shr));
        let sweeper = s.spawn(|| pipeline::sweeper(shr));
        let sampler = rt.spawn(sampler::run(
            Arc::clone(&sh),
            sampler_client,
            sample_stop_rx,
        ));
        let load = rt.spawn(load::run(Arc::clone(&sh), load_client, load_stop_rx));

        // Faults on schedule, progress, until the duration is over (or the stream died).
        let load_start = Instant::now();
        let duration_ms = cfg.common.duration.as_millis() as u64;
        let mut next = 0;
        loop {
            let elapsed = load_start.elapsed().as_millis() as u64;
            while next < times.len() && times[next].0 <= elapsed {
                let k = times[next].1;
                let writer = sh.faults.lock().unwrap()[k].planned.writer;
                let _ = sh.senders[sh.shard(writer)].send(Cmd::Fault(k));
                next += 1;
            }
            if elapsed >= duration_ms || stream.is_finished() {
                break;
            }
            progress.tick(shr, "streaming");
            let until_next = times.get(next).map_or(50, |t| t.0.saturating_sub(elapsed));
            std::thread::sleep(Duration::from_millis(
                until_next.min(duration_ms - elapsed).clamp(1, 50),
            ));
        }

        // The graceful stop: load off (CHECKPOINT, fence), wait for the fence to be streamed
        // and acknowledged, end the stream, drain the workers.
        sh.stop_ms.store(sh.rel_ms().max(1), Ordering::Relaxed);
        let _ = load_stop.send(true);
        let load_log = rt.block_on(load).map_err(|e| format!("load task: {e}"))?;
        let fence_wait = Instant::now() + FENCE_WAIT;
        while sh.fence.lock().unwrap().is_none()
            && Instant::now() < fence_wait
            && !stream.is_finished()
        {
            progress.tick(shr, "waiting for the fence");
            std::thread::sleep(Duration::from_millis(10));
        }
        let fence = *sh.fence.lock().unwrap();
        if let Some((lsn, end)) = fence {
            // Pinning faults resolve within G + 2P of their anchor; allow that and a margin.
            // Electric's algorithm never releases a killed or wedged writer: a short look only.
            let pinned_for_good = sh.source.tracker().is_none()
                && sh
                    .faults
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|f| f.planned.kind.pins() && f.applied_ms.is_some());
            let wait = if pinned_for_good {
                Duration::from_secs(1)
            } else {
                Duration::from_millis(cfg.common.grace_ms + 2 * cfg.common.sweep_ms)
                    + Duration::from_secs(3)
            };
            let until = Instant::now() + wait;
            while sh.source.ack().is_none_or(|a| a < lsn) && Instant::now() < until {
                progress.tick(shr, "final ack");
                std::thread::sleep(Duration::from_millis(10));
            }
            if sh.source.ack().is_some_and(|a| a >= lsn) {
                let until = Instant::now() + Duration::from_secs(5);
                while last_confirmed(shr) < end && Instant::now() < until {
                    progress.tick(shr, "final confirm");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        let _ = stream_stop.send(true);
        let summary = rt
            .block_on(stream)
            .map_err(|e| format!("replication task: {e}"))?;
        let dispatched = dispatcher.join();
        for tx in &sh.senders {
            let _ = tx.send(Cmd::Drain);
        }
        while !workers.iter().all(|w| w.is_finished()) {
            progress.tick(shr, "draining");
            std::thread::sleep(Duration::from_millis(10));
        }
        for w in workers {
            w.join().map_err(|_| "a worker panicked".to_owned())?;
        }
        dispatched.map_err(|_| "the dispatcher panicked".to_owned())?;
        // The walsender exits after the copy ended: sample the settled slot, then stop.
        std::thread::sleep(sampler::SAMPLE_EVERY * 3);
        let _ = sample_stop.send(true);
        let observer = rt
            .block_on(sampler)
            .map_err(|e| format!("sampler task: {e}"))??;
        sh.host.stop_background.store(true, Ordering::Relaxed);
        acker.join().map_err(|_| "the acker panicked".to_owned())?;
        sweeper
            .join()
            .map_err(|_| "the sweeper panicked".to_owned())?;
        Ok::<_, String>((load_log, summary, observer))
    });
    progress.finish();
    let (load_log, summary, observer) = outcome?;
    let summary = summary.unwrap_or_else(|e| {
        sh.error(e);
        stream::StreamSummary::default()
    });
    let report = gather::report(&sh, setup, load_log, summary, observer, wall);
    if !cfg.keep_store
        && let Err(e) = sh.store.remove()
    {
        eprintln!(
            "tidemark: pg: cannot remove {}: {e}",
            sh.store.dir().display()
        );
    }
    Ok(report)
}

/// The newest confirmed position the sampler saw.
fn last_confirmed(sh: &Shared) -> u64 {
    sh.samples
        .lock()
        .unwrap()
        .last()
        .map_or(0, |s| s.slot.confirmed)
}
