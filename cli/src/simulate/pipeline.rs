//! The pipeline's threads: the sequencer, the workers (writers + storage sink), the sweeper and
//! the observer's sampler. Everything goes through the public `tidemark` API.
//!
//! ```text
//!  sequencer ──(tx, writers)──▶ observer log          (before the commit: see observer.rs)
//!      │ Tracker::commit(offset, writers, now)
//!      │ push one message per writer ──▶ writer's BatchBuffer (full: host-side spill queue)
//!      │ notify the writer's shard
//!      ▼
//!  worker k (owns writers i ≡ k mod W; one storage device)
//!      poll_batch ─▶ storage (latency + bytes/throughput) ─▶ proven[i] = tx ─▶ ack(batch)
//!                                                   TrackerLink ─▶ Tracker::flushed(i, offset)
//!  sweeper: every P, under the gate's write lock: sweep(now), take_events, mark evictions
//!  sampler: every 10 ms, under the gate's read lock: ack(), then the observer's bound
//! ```

use crossbeam_utils::CachePadded;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tidemark::batch::{Clock, Message, TrackerLink};
use tidemark::{EvictReason, Offset, Tracker, TrackerError, WriterId};

mod sink;
mod sweeper;

pub(crate) use sink::Sink;
pub(crate) use sweeper::{sampler, sweeper};

use super::config::{Bug, Config};
use super::faults::{FaultKind, Record};
use super::observer::Observer;
use crate::common::Rng;
use crate::pipeline_common::host::Host;
use crate::pipeline_common::worker as worker_loop;
use crate::pipeline_common::writer::{self, BufferShape, Mode, Offered, flush_notify};

/// Observer sampling period.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_millis(10);
/// The sequencer waits while this many messages are offered but not resolved (backpressure).
const MAX_OUTSTANDING: u64 = 64 * 1024;

/// Counters of the sequencer.
#[derive(Debug, Default)]
pub(crate) struct SeqCounters {
    /// Commits accepted by the tracker.
    pub commits: AtomicU64,
    /// Messages offered to writers (one per writer per commit).
    pub offered: AtomicU64,
    /// Commits retried because a chosen writer had just been evicted.
    pub retries: AtomicU64,
    /// Commits rejected for any other reason (a bug).
    pub commit_errors: AtomicU64,
    /// Times it waited for backpressure.
    pub throttled: AtomicU64,
}

/// What only the simulated storage sink counts (per worker).
#[derive(Debug, Default)]
pub(crate) struct SinkCounters {
    /// Batches nacked (requeued) by storage errors.
    pub nacks: AtomicU64,
    /// Messages delivered out of per-writer order (must be 0).
    pub order_violations: AtomicU64,
}

/// Counters of a worker (and of the sweeper).
pub(crate) type WorkerCounters = writer::WorkerCounters<SinkCounters>;

/// A fault action for the owning worker.
#[derive(Clone, Copy, Debug)]
pub(crate) enum FaultCmd {
    /// Apply fault number `k`.
    Apply(usize),
    /// Lift the pause of fault number `k`.
    Resume(usize),
}

/// A command to a worker.
pub(crate) type Cmd = worker_loop::Cmd<FaultCmd>;

/// An eviction as the sweeper saw it.
#[derive(Clone, Debug)]
pub(crate) struct Eviction {
    /// Simulator index.
    pub writer: u32,
    /// Why.
    pub reason: EvictReason,
    /// The sweep's `now`.
    pub at_ms: u64,
    /// The fault injected on it, if any.
    pub fault: Option<FaultKind>,
}

/// One observer sample.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sample {
    /// Ms since the start.
    pub t_ms: u64,
    /// The last commit's tx known to the observer.
    pub last_tx: Option<u64>,
    /// The tracker's ack.
    pub ack: Option<u64>,
    /// The observer's exact safe bound.
    pub bound: Option<u64>,
}

/// Everything the threads share.
pub(crate) struct Shared {
    /// The configuration.
    pub cfg: Config,
    /// The clock, the writers, the sweep gate and log, the worker counters, the stop flag.
    pub host: Host<SinkCounters>,
    /// The tracker.
    pub tracker: Arc<Tracker>,
    /// Their tracker ids, by index.
    pub ids: Vec<WriterId>,
    /// Tracker ms at the start.
    pub start_ms: u64,
    /// Deliveries published to the observer, not yet taken by the sampler.
    pub deliveries: Mutex<Vec<(u64, u32)>>,
    /// The sequencer stops.
    pub stop_sequencer: AtomicBool,
    /// The last committed tx.
    pub last_tx: AtomicU64,
    /// Writers that need an anchor commit (faults just applied).
    pub forced: Mutex<Vec<u32>>,
    forced_flag: AtomicBool,
    /// The faults, by plan order.
    pub faults: Mutex<Vec<Record>>,
    /// Fault number by writer.
    pub fault_of: std::collections::HashMap<u32, usize>,
    /// Every eviction.
    pub evictions: Mutex<Vec<Eviction>>,
    /// Sequencer counters.
    pub seq: CachePadded<SeqCounters>,
    /// Commit errors other than evicted writers (first one).
    pub first_error: Mutex<Option<String>>,
    /// Worker channels.
    pub senders: Vec<Sender<Cmd>>,
}

impl Shared {
    /// Builds the tracker, the writers and their buffers.
    pub(crate) fn new(
        cfg: Config,
        clock: Arc<dyn Clock>,
        faults: Vec<Record>,
        senders: Vec<Sender<Cmd>>,
    ) -> Result<Shared, String> {
        let tracker = Arc::new(
            Tracker::new(tidemark::TrackerOptions {
                expected_writers: cfg.common.writers,
                stall_grace_ms: cfg.common.grace_ms,
                ..Default::default()
            })
            .map_err(|e| format!("tracker: {e}"))?,
        );
        let shape = BufferShape {
            max_batch: cfg.common.max_batch,
            capacity: cfg.common.capacity,
            max_bytes: (cfg.common.max_batch * cfg.message_bytes.max(1)) as u64,
            capacity_bytes: (cfg.common.capacity * cfg.message_bytes.max(1)) as u64,
            linger_ms: cfg.common.linger_ms,
        };
        let mut writers = Vec::with_capacity(cfg.common.writers);
        let mut ids = Vec::with_capacity(cfg.common.writers);
        for i in 0..cfg.common.writers {
            let id = tracker.register().map_err(|e| format!("register: {e}"))?;
            if id.index() as usize != i {
                return Err(format!("register: expected slot {i}, got {id}"));
            }
            let link = Arc::new(TrackerLink::new(Arc::clone(&tracker), id));
            writers.push(shape.writer(&clock, link)?);
            ids.push(id);
        }
        let fault_of = faults
            .iter()
            .enumerate()
            .map(|(k, r)| (r.planned.writer, k))
            .collect();
        let start_ms = ms(&*clock);
        let host = Host::new(&cfg.common, clock, writers);
        Ok(Shared {
            cfg,
            host,
            tracker,
            ids,
            start_ms,
            deliveries: Mutex::new(Vec::new()),
            stop_sequencer: AtomicBool::new(false),
            last_tx: AtomicU64::new(0),
            forced: Mutex::new(Vec::new()),
            forced_flag: AtomicBool::new(false),
            faults: Mutex::new(faults),
            fault_of,
            evictions: Mutex::new(Vec::new()),
            seq: CachePadded::default(),
            first_error: Mutex::new(None),
            senders,
        })
    }

    /// Tracker time (ms on the shared clock).
    pub(crate) fn now_ms(&self) -> u64 {
        ms(&*self.host.clock)
    }

    fn shard(&self, i: u32) -> usize {
        i as usize % self.cfg.common.workers
    }

    /// Asks the sequencer for an anchor commit to writer `i`.
    fn request_anchor(&self, i: u32) {
        self.forced.lock().unwrap().push(i);
        // Release: the sequencer's Acquire load then finds the writer in `forced`.
        self.forced_flag.store(true, Ordering::Release);
    }
}

/// Milliseconds on `clock`.
pub(crate) fn ms(clock: &dyn Clock) -> u64 {
    clock.now().as_millis() as u64
}

// ----- sequencer ------------------------------------------------------------------------------

/// Produces commits until told to stop; returns the last committed tx.
pub(crate) fn sequencer(sh: &Shared) -> u64 {
    let cfg = &sh.cfg;
    let n = cfg.common.writers as u64;
    let mut rng = Rng::new(cfg.common.seed, 1);
    let mut notify: Vec<Vec<u32>> = vec![Vec::new(); cfg.common.workers];
    let mut chosen: Vec<u32> = Vec::with_capacity(8);
    let mut ids: Vec<WriterId> = Vec::with_capacity(8);
    let mut anchors: Vec<u32> = Vec::new();
    let mut excluded: Vec<u32> = Vec::new();
    let payload_len = cfg.message_bytes;
    let start = Instant::now();
    let mut tx = 0u64;
    let mut produced = 0u64;
    let mut offered = 0u64;
    let c = &*sh.seq;
    while !sh.stop_sequencer.load(Ordering::Relaxed) {
        anchors.clear();
        // Acquire: pairs with `request_anchor`.
        if sh.forced_flag.load(Ordering::Acquire) {
            let mut f = sh.forced.lock().unwrap();
            anchors.append(&mut f);
            sh.forced_flag.store(false, Ordering::Relaxed);
        }
        tx += 1;
        let offset = Offset::new(tx, 1 + rng.below(16));
        let want = (1 + rng.below(4) as usize).max(anchors.len());
        chosen.clear();
        chosen.extend_from_slice(&anchors);
        let now_ms = loop {
            while chosen.len() < want {
                let i = rng.below(n) as u32;
                if sh.host.writers[i as usize].mode.load() != Mode::Evicted
                    && !chosen.contains(&i)
                    && !excluded.contains(&i)
                {
                    chosen.push(i);
                }
            }
            ids.clear();
            ids.extend(chosen.iter().map(|&i| sh.ids[i as usize]));
            let now_ms = sh.now_ms();
            // The observer hears of the commit before the tracker does.
            sh.deliveries
                .lock()
                .unwrap()
                .extend(chosen.iter().map(|&i| (tx, i)));
            match sh.tracker.commit(offset, &ids, now_ms) {
                Ok(()) => break Some(now_ms),
                Err(TrackerError::EvictedWriter(w)) => {
                    // Evicted since we chose it: the commit changed nothing; choose again.
                    // (The sweeper marks the mode; until it does, we skip it ourselves.)
                    excluded.push(w.index());
                    chosen.retain(|&i| i != w.index());
                    c.retries.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    c.commit_errors.fetch_add(1, Ordering::Relaxed);
                    sh.first_error
                        .lock()
                        .unwrap()
                        .get_or_insert_with(|| format!("commit tx {tx}: {e}"));
                    break None;
                }
            }
        };
        let Some(now_ms) = now_ms else {
            tx -= 1;
            break;
        };
        if !anchors.is_empty() {
            let mut faults = sh.faults.lock().unwrap();
            for a in anchors.iter().filter(|a| chosen.contains(a)) {
                if let Some(&k) = sh.fault_of.get(a) {
                    faults[k].anchor_ms.get_or_insert(now_ms);
                }
            }
        }
        // Relaxed: a progress figure; the observer has its own record of commits.
        sh.last_tx.store(tx, Ordering::Relaxed);
        c.commits.fetch_add(1, Ordering::Relaxed);
        for &i in &chosen {
            let w = &sh.host.writers[i as usize];
            let m = Message::with_offset(vec![0u8; payload_len], offset);
            if w.offer(m) == Offered::Returned {
                // Counted with the sweeper's set: the sequencer has no worker counters.
                let last = sh.host.work.len() - 1;
                sh.host.work[last].returned.fetch_add(1, Ordering::Relaxed);
            }
            offered += 1;
            if w.take_notify() {
                notify[sh.shard(i)].push(i);
            }
        }
        c.offered.store(offered, Ordering::Relaxed);
        produced += 1;
        if let Some(rate) = cfg.rate {
            let target = start + Duration::from_secs_f64(produced as f64 / rate as f64);
            let now = Instant::now();
            if target > now + Duration::from_millis(1) {
                flush_notify(&sh.senders, &mut notify);
                std::thread::sleep(target - now);
            }
        }
        if produced & 63 == 0 {
            flush_notify(&sh.senders, &mut notify);
            while outstanding(sh) > MAX_OUTSTANDING && !sh.stop_sequencer.load(Ordering::Relaxed) {
                c.throttled.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }
    flush_notify(&sh.senders, &mut notify);
    tx
}

/// Messages offered and not yet resolved (delivered, returned or handed back).
fn outstanding(sh: &Shared) -> u64 {
    let offered = sh.seq.offered.load(Ordering::Relaxed);
    let resolved = sh.host.work_sum(|c| &c.delivered)
        + sh.host.work_sum(|c| &c.returned)
        + sh.host.work_sum(|c| &c.handed_back_mid);
    offered.saturating_sub(resolved)
}
