//! What the threads share, and the threads that talk to the tracker: the dispatcher (stream
//! events → tracker commits → writers' buffers), the acker (tracker ack → flush LSN) and the
//! sweeper (staleness sweeps, evictions). The workers are in `worker.rs`; the async side
//! (replication stream, sampler, load) never calls the tracker.
//!
//! ```text
//!  stream task ─(Begin, rows, Commit, KeepAlive)─▶ dispatcher thread
//!     ▲                                              │ deliveries ─▶ observer log (first)
//!     │ update_applied_lsn                           │ Source::commit(commit_lsn, writers)
//!     │                                              │ AckMap::commit(commit_lsn, end_lsn)
//!  acker thread ◀─ Source::ack() ─ AckMap::advance   │ one message per writer ─▶ its BatchBuffer
//!                                                    ▼
//!  worker k: poll_batch ─▶ (latency) ─▶ Store::append (+fsync) ─▶ proven[w] ─▶ ack ─▶ link
//!  sweeper: every P, gate write-locked: sweep, take_events, evicted[w]; stop evicted buffers
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidemark::batch::{Clock, Message};
use tidemark::{EvictReason, Offset, WriterId};

use super::ack::AckMap;
use super::config::{Config, FaultKind};
use super::decode::{Decoded, Decoder, Row};
use super::faults::Record;
use super::sampler::Sample;
use super::source::{CommitError, Source};
use super::sql::FENCE_PREFIX;
use super::store::{self, Store};
use super::stream::StreamEvent;
use crate::pipeline_common::host::Host;
use crate::pipeline_common::sweep::Sweeper;
use crate::pipeline_common::worker;
use crate::pipeline_common::writer::{self, BufferShape, Mode, Offered, flush_notify};

/// Dispatcher counters.
#[derive(Debug, Default)]
pub(crate) struct DispatchCounters {
    /// Commits streamed (including the fence and commits without rows).
    pub commits: AtomicU64,
    /// Rows streamed.
    pub rows: AtomicU64,
    /// Messages offered to writers (one per writer per commit).
    pub offered: AtomicU64,
    /// Rows not delivered because their writer was evicted (invalidated).
    pub rows_invalidated: AtomicU64,
    /// Commits retried because a chosen writer was evicted meanwhile.
    pub retries: AtomicU64,
    /// Keepalives received.
    pub keepalives: AtomicU64,
    /// Keepalives queued as ack points.
    pub keepalives_queued: AtomicU64,
    /// Messages refused by a stopped buffer or left in a dead writer's spill queue.
    pub returned: AtomicU64,
}

/// What only the file storage counts (per worker).
#[derive(Debug, Default)]
pub(crate) struct StoreCounters {
    /// Bytes appended.
    pub bytes: AtomicU64,
    /// Failed appends (the batch is requeued).
    pub store_errors: AtomicU64,
}

/// Counters of a worker (and of the sweeper).
pub(crate) type WorkerCounters = writer::WorkerCounters<StoreCounters>;

/// A streamed commit, kept for the final checks.
#[derive(Clone, Debug)]
pub(crate) struct CommitRec {
    /// Its commit LSN (the tracker's `tx`).
    pub commit_lsn: u64,
    /// Its end LSN (what confirming it means).
    pub end_lsn: u64,
    /// Its rows.
    pub rows: Vec<Row>,
    /// The writers it was delivered to.
    pub delivered: Vec<u32>,
}

/// An eviction as the sweeper saw it.
#[derive(Clone, Debug)]
pub(crate) struct Eviction {
    /// Writer.
    pub writer: u32,
    /// Why.
    pub reason: EvictReason,
    /// Ms since the start (the sweep's clock).
    pub at_ms: u64,
    /// The fault injected on it, if any.
    pub fault: Option<FaultKind>,
    /// Messages its buffer handed back when it was invalidated.
    pub handed_back: u64,
}

/// A command to a worker (the fault action is a fault number).
pub(crate) type Cmd = worker::Cmd<usize>;

/// Everything the threads and tasks share.
pub(crate) struct Shared {
    /// The configuration.
    pub cfg: Config,
    /// The clock, the writers, the sweep gate and log, the worker counters, the stop flag.
    pub host: Host<StoreCounters>,
    /// Clock ms at the start (report times are relative to it).
    pub start_ms: u64,
    /// The tracker.
    pub source: Source,
    /// Per writer: a fault was just applied, the next commit to it is the anchor.
    pub wants_anchor: Vec<AtomicBool>,
    /// Their stores.
    pub store: Store,
    /// Ack points (dispatcher pushes, acker advances).
    pub ackmap: Mutex<AckMap>,
    /// The newest flush LSN to confirm (acker → stream task).
    pub confirm: AtomicU64,
    /// Wakes the stream task when `confirm` grew.
    pub confirm_tx: tokio::sync::watch::Sender<u64>,
    /// Deliveries published to the observer and not yet taken by the sampler.
    pub deliveries: Mutex<Vec<(u64, u32)>>,
    /// Every streamed commit.
    pub commits: Mutex<Vec<CommitRec>>,
    /// The newest streamed commit's (commit LSN, end LSN).
    pub newest: Mutex<Option<(u64, u64)>>,
    /// The fence commit's (commit LSN, end LSN), once streamed.
    pub fence: Mutex<Option<(u64, u64)>>,
    /// The run id carried by the fence.
    pub run_id: String,
    /// Writers whose fault wants an anchor row (taken by the load generator).
    pub anchor_requests: Mutex<Vec<u32>>,
    /// The faults, by plan order.
    pub faults: Mutex<Vec<Record>>,
    /// Fault number by writer.
    pub fault_of: HashMap<u32, usize>,
    /// Every eviction.
    pub evictions: Mutex<Vec<Eviction>>,
    /// Dispatcher counters.
    pub disp: DispatchCounters,
    /// Errors that fail the run (first few).
    pub errors: Mutex<Vec<String>>,
    /// Worker channels.
    pub senders: Vec<Sender<Cmd>>,
    /// The sampler's readings, in time order.
    pub samples: Mutex<Vec<Sample>>,
    /// When the controller told the load to stop (ms since the start; 0: not yet).
    pub stop_ms: AtomicU64,
}

/// How many errors are kept for the report.
const MAX_ERRORS: usize = 20;

impl Shared {
    /// Builds the writers and their buffers over `source`.
    pub(crate) fn new(
        cfg: Config,
        clock: Arc<dyn Clock>,
        source: Source,
        store: Store,
        start_lsn: u64,
        faults: Vec<Record>,
        senders: Vec<Sender<Cmd>>,
    ) -> Result<Shared, String> {
        let per = (cfg.row_bytes + 64) as u64 * 4;
        let shape = BufferShape {
            max_batch: cfg.common.max_batch,
            capacity: cfg.common.capacity,
            max_bytes: cfg.common.max_batch as u64 * per,
            capacity_bytes: cfg.common.capacity as u64 * per * 4,
            linger_ms: cfg.common.linger_ms,
        };
        let writers = (0..cfg.common.writers)
            .map(|i| shape.writer(&clock, source.link(i as u32)))
            .collect::<Result<Vec<_>, _>>()?;
        let wants_anchor = (0..cfg.common.writers)
            .map(|_| AtomicBool::new(false))
            .collect();
        let fault_of = faults
            .iter()
            .enumerate()
            .map(|(k, r)| (r.planned.writer, k))
            .collect();
        let start_ms = clock.now().as_millis() as u64;
        let run_id = format!("{}-{start_ms}", std::process::id());
        let host = Host::new(&cfg.common, clock, writers);
        Ok(Shared {
            cfg,
            host,
            start_ms,
            source,
            wants_anchor,
            store,
            ackmap: Mutex::new(AckMap::new(start_lsn)),
            confirm: AtomicU64::new(start_lsn),
            confirm_tx: tokio::sync::watch::channel(start_lsn).0,
            deliveries: Mutex::new(Vec::new()),
            commits: Mutex::new(Vec::new()),
            newest: Mutex::new(None),
            fence: Mutex::new(None),
            run_id,
            anchor_requests: Mutex::new(Vec::new()),
            faults: Mutex::new(faults),
            fault_of,
            evictions: Mutex::new(Vec::new()),
            disp: DispatchCounters::default(),
            errors: Mutex::new(Vec::new()),
            senders,
            samples: Mutex::new(Vec::new()),
            stop_ms: AtomicU64::new(0),
        })
    }

    /// Clock ms (the tracker's `now`).
    pub(crate) fn now_ms(&self) -> u64 {
        self.host.clock.now().as_millis() as u64
    }

    /// Ms since the start.
    pub(crate) fn rel_ms(&self) -> u64 {
        self.now_ms().saturating_sub(self.start_ms)
    }

    /// Records an error that fails the run.
    pub(crate) fn error(&self, e: String) {
        let mut errors = self.errors.lock().unwrap();
        if errors.len() < MAX_ERRORS {
            errors.push(e);
        }
    }

    /// The worker owning writer `i`.
    pub(crate) fn shard(&self, i: u32) -> usize {
        i as usize % self.cfg.common.workers
    }
}

// ----- dispatcher -----------------------------------------------------------------------------

/// The transaction being received.
struct Txn {
    rows: Vec<Row>,
    fence: bool,
}

/// Turns stream events into commits and deliveries until the stream ends.
pub(crate) fn dispatcher(sh: &Shared, rx: Receiver<StreamEvent>) {
    let mut decoder = Decoder::new();
    let mut txn: Option<Txn> = None;
    let mut scratch = Vec::new();
    let mut notify: Vec<Vec<u32>> = vec![Vec::new(); sh.cfg.common.workers];
    let mut fence_seen = false;
    while let Ok(ev) = rx.recv() {
        match ev {
            StreamEvent::Begin => {
                if txn.is_some() {
                    sh.error("stream: Begin inside a transaction".into());
                }
                txn = Some(Txn {
                    rows: Vec::new(),
                    fence: false,
                });
            }
            StreamEvent::Data(data) => match decoder.decode(&data) {
                Ok(Decoded::Row(r)) => match &mut txn {
                    Some(t) => t.rows.push(r),
                    None => sh.error("stream: a row outside a transaction".into()),
                },
                Ok(Decoded::Meta) => {}
                Err(e) => sh.error(format!("stream: {e}")),
            },
            StreamEvent::Message { prefix, content } => {
                if prefix == FENCE_PREFIX && content == sh.run_id.as_bytes() {
                    match &mut txn {
                        Some(t) => t.fence = true,
                        None => sh.error("stream: the fence outside a transaction".into()),
                    }
                }
            }
            StreamEvent::Commit { lsn, end_lsn } => {
                let Some(t) = txn.take() else {
                    sh.error("stream: Commit outside a transaction".into());
                    continue;
                };
                commit(sh, t.rows, lsn, end_lsn, &mut scratch, &mut notify);
                flush_notify(&sh.senders, &mut notify);
                if t.fence {
                    fence_seen = true;
                    *sh.fence.lock().unwrap() = Some((lsn, end_lsn));
                }
            }
            StreamEvent::KeepAlive { wal_end } => {
                sh.disp.keepalives.fetch_add(1, Ordering::Relaxed);
                // Outside a transaction only, and not after the fence: the final confirmed
                // position is then exactly the fence's end.
                if txn.is_none() && !fence_seen {
                    sh.ackmap.lock().unwrap().keepalive(wal_end);
                    sh.disp.keepalives_queued.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

fn commit(
    sh: &Shared,
    rows: Vec<Row>,
    lsn: u64,
    end_lsn: u64,
    scratch: &mut Vec<WriterId>,
    notify: &mut [Vec<u32>],
) {
    let writers = sh.cfg.common.writers;
    // Writers this commit concerns, in first-row order.
    let mut chosen: Vec<u32> = Vec::with_capacity(rows.len());
    for r in &rows {
        let w = r.writer(writers);
        if !chosen.contains(&w) {
            chosen.push(w);
        }
    }
    let mut invalidated: Vec<u32> = chosen
        .iter()
        .copied()
        .filter(|&w| sh.host.writers[w as usize].mode.load() == Mode::Evicted)
        .collect();
    chosen.retain(|w| !invalidated.contains(w));
    let offset = Offset::new(lsn, rows.len() as u64);
    let now_ms = loop {
        let now_ms = sh.now_ms();
        // The observer hears of the deliveries before the tracker does.
        sh.deliveries
            .lock()
            .unwrap()
            .extend(chosen.iter().map(|&w| (lsn, w)));
        match sh.source.commit(offset, &chosen, scratch, now_ms) {
            Ok(()) => break Some(now_ms),
            Err(CommitError::Evicted(w)) => {
                // Evicted since we looked: the commit changed nothing; go without it.
                sh.disp.retries.fetch_add(1, Ordering::Relaxed);
                chosen.retain(|&i| i != w);
                invalidated.push(w);
            }
            Err(CommitError::Other(e)) => {
                sh.error(format!("commit {}: {e}", super::ack::lsn_str(lsn)));
                break None;
            }
        }
    };
    let Some(now_ms) = now_ms else { return };
    if let Err(e) = sh.ackmap.lock().unwrap().commit(lsn, end_lsn) {
        sh.error(format!("ack map: {e:?}"));
    }
    *sh.newest.lock().unwrap() = Some((lsn, end_lsn));
    let d = &sh.disp;
    d.commits.fetch_add(1, Ordering::Relaxed);
    d.rows.fetch_add(rows.len() as u64, Ordering::Relaxed);
    let skipped = rows
        .iter()
        .filter(|r| invalidated.contains(&r.writer(writers)))
        .count();
    d.rows_invalidated
        .fetch_add(skipped as u64, Ordering::Relaxed);
    let mut payload = Vec::new();
    let mut mine = Vec::new();
    for &w in &chosen {
        mine.clear();
        mine.extend(rows.iter().filter(|r| r.writer(writers) == w).copied());
        payload.clear();
        store::encode(lsn, &mine, &mut payload);
        let pw = &sh.host.writers[w as usize];
        if pw.offer(Message::with_offset(payload.clone(), offset)) == Offered::Returned {
            d.returned.fetch_add(1, Ordering::Relaxed);
        }
        d.offered.fetch_add(1, Ordering::Relaxed);
        if sh.wants_anchor[w as usize].swap(false, Ordering::Relaxed)
            && let Some(&k) = sh.fault_of.get(&w)
        {
            let rel = now_ms.saturating_sub(sh.start_ms);
            let mut f = sh.faults.lock().unwrap();
            if f[k].anchor_ms.is_none() {
                f[k].anchor_ms = Some(rel);
                f[k].anchor_lsn = Some(lsn);
            }
        }
        if pw.take_notify() {
            notify[sh.shard(w)].push(w);
        }
    }
    sh.commits.lock().unwrap().push(CommitRec {
        commit_lsn: lsn,
        end_lsn,
        rows,
        delivered: chosen,
    });
}

// ----- acker and sweeper ----------------------------------------------------------------------

/// How often the acker looks at the ack.
const ACK_POLL: Duration = Duration::from_millis(2);

/// Maps the ack to flush LSNs until told to stop.
pub(crate) fn acker(sh: &Shared) {
    while !sh.host.stop_background.load(Ordering::Relaxed) {
        let ack = sh.source.ack();
        let next = sh.ackmap.lock().unwrap().advance(ack);
        if let Some(lsn) = next {
            // Relaxed: the watch channel below carries the wake-up; the value is monotonic.
            sh.confirm.fetch_max(lsn, Ordering::Relaxed);
            sh.confirm_tx.send_replace(lsn);
        }
        std::thread::sleep(ACK_POLL);
    }
}

/// Sweeps every `P` (tidemark only) until told to stop; marks and invalidates evicted writers.
pub(crate) fn sweeper(sh: &Shared) {
    let Some(tracker) = sh.source.tracker() else {
        return;
    };
    let sweeper = Sweeper {
        tracker,
        host: &sh.host,
        killed_counted: false,
    };
    let after_sweep = || {
        // A flush that released a long-pinned head may leave a budgeted backlog: the ack is
        // safe meanwhile; finish it here.
        let mut steps = 0;
        while tracker.run_backlog() && steps < 10_000 {
            steps += 1;
        }
        sh.host.sweeps.lock().unwrap().backlog_steps += steps;
    };
    // Invalidated by the sweeper: the buffer hands back what it held (never to be stored), and
    // the dispatcher delivers nothing more to this writer.
    sweeper.run(after_sweep, |now_ms, e| {
        let rel = now_ms.saturating_sub(sh.start_ms);
        let fault = sh.fault_of.get(&e.writer).map(|&k| {
            let mut f = sh.faults.lock().unwrap();
            f[k].evicted.get_or_insert((rel, e.reason));
            f[k].planned.kind
        });
        sh.evictions.lock().unwrap().push(Eviction {
            writer: e.writer,
            reason: e.reason,
            at_ms: rel,
            fault,
            handed_back: e.handed_back,
        });
    });
}
