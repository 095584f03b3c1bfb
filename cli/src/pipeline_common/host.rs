//! The part of a run's shared state both commands keep the same way: the clock, the writers,
//! the sweep gate and log, the worker counters, and the background threads' stop flag.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, RwLock};

use crossbeam_utils::CachePadded;
use tidemark::batch::Clock;

use super::flags::Common;
use super::sweep::SweepLog;
use super::worker::Shard;
use super::writer::{HostWriter, WorkerCounters, counter_sum};

/// The host side the threads of `simulate` or `pg` share; `E` is the storage's own counters.
pub(crate) struct Host<E> {
    /// The one clock of the tracker and every buffer.
    pub clock: Arc<dyn Clock>,
    /// The writers by index (= tracker slot index).
    pub writers: Vec<HostWriter>,
    /// Sweeps (write) vs observer samples (read).
    pub gate: RwLock<()>,
    /// Sweep measurements.
    pub sweeps: Mutex<SweepLog>,
    /// Per worker, and one more for the sweeper.
    pub work: Vec<CachePadded<WorkerCounters<E>>>,
    /// The background threads (the sweeper, the sampler, ...) stop.
    pub stop_background: AtomicBool,
    /// Worker count `W`.
    pub workers: usize,
    /// The sweep period `P` (ms).
    pub sweep_ms: u64,
}

impl<E: Default> Host<E> {
    /// The host side over `writers`, with counters for each of `common.workers` workers and
    /// the sweeper.
    pub(crate) fn new(common: &Common, clock: Arc<dyn Clock>, writers: Vec<HostWriter>) -> Self {
        Host {
            clock,
            writers,
            gate: RwLock::new(()),
            sweeps: Mutex::new(SweepLog::default()),
            work: (0..=common.workers)
                .map(|_| CachePadded::default())
                .collect(),
            stop_background: AtomicBool::new(false),
            workers: common.workers,
            sweep_ms: common.sweep_ms,
        }
    }
}

impl<E> Host<E> {
    /// Milliseconds on the clock (the tracker's `now`).
    pub(crate) fn now_ms(&self) -> u64 {
        self.clock.now().as_millis() as u64
    }

    /// The sum of one worker counter.
    pub(crate) fn work_sum(&self, f: impl Fn(&WorkerCounters<E>) -> &AtomicU64) -> u64 {
        counter_sum(&self.work, |c| f(c))
    }

    /// The sweeper's counters (after every worker's).
    pub(crate) fn sweeper_counters(&self) -> &WorkerCounters<E> {
        &self.work[self.work.len() - 1]
    }

    /// What worker `k` works on.
    pub(crate) fn shard_of(&self, k: usize) -> Shard<'_> {
        Shard {
            writers: &self.writers,
            clock: &*self.clock,
            shard: k,
            workers: self.workers,
            returned: &self.work[k].returned,
        }
    }
}
