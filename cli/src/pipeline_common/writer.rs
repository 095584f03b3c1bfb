//! One writer as the host holds it, and the counters of the threads that service writers.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidemark::batch::{
    AckError, Batch, BatchBuffer, BatchConfig, Clock, FlushLink, Message, PushRefusal, State,
};

use super::worker::Cmd;

/// What the host does with a writer. The owning worker sets it, except [`Mode::Evicted`]: the
/// sweeper (or the producer after a rejected commit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Mode {
    /// Serviced normally.
    Healthy,
    /// Serviced with slow storage.
    Slow,
    /// Held back by the host: not serviced until resumed (`simulate` only).
    Paused,
    /// Never serviced again; its batches are never acked.
    Wedged,
    /// Gone; `teardown` reported.
    Killed,
    /// Evicted by the tracker: receives nothing more; buffer stopped.
    Evicted,
}

impl Mode {
    /// Does the worker poll its buffer?
    pub(crate) fn serviced(self) -> bool {
        matches!(self, Mode::Healthy | Mode::Slow)
    }

    /// Alive at the end of a run (it must have handed nothing back)?
    pub(crate) fn live(self) -> bool {
        matches!(self, Mode::Healthy | Mode::Slow | Mode::Paused)
    }

    fn from_u8(v: u8) -> Mode {
        match v {
            0 => Mode::Healthy,
            1 => Mode::Slow,
            2 => Mode::Paused,
            3 => Mode::Wedged,
            4 => Mode::Killed,
            _ => Mode::Evicted,
        }
    }
}

/// A [`Mode`] shared between threads (every access is `Relaxed`: the mode orders nothing).
#[derive(Debug)]
pub(crate) struct AtomicMode(AtomicU8);

impl AtomicMode {
    /// Starts at `m`.
    pub(crate) fn new(m: Mode) -> AtomicMode {
        AtomicMode(AtomicU8::new(m as u8))
    }

    /// The current mode.
    pub(crate) fn load(&self) -> Mode {
        Mode::from_u8(self.0.load(Ordering::Relaxed))
    }

    /// Sets the mode.
    pub(crate) fn store(&self, m: Mode) {
        self.0.store(m as u8, Ordering::Relaxed);
    }

    /// Sets the mode and returns the one before.
    pub(crate) fn swap(&self, m: Mode) -> Mode {
        Mode::from_u8(self.0.swap(m as u8, Ordering::Relaxed))
    }

    /// Sets `to` when the mode is `from`; true when it did.
    pub(crate) fn change(&self, from: Mode, to: Mode) -> bool {
        self.0
            .compare_exchange(from as u8, to as u8, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

/// One writer: its buffer, its mode, the host's spill queue and the observer's inputs.
#[derive(Debug)]
pub(crate) struct HostWriter {
    /// Its batch buffer (its flush link reports to the tracker).
    pub buffer: BatchBuffer,
    /// See [`Mode`].
    pub mode: AtomicMode,
    /// A notification to its worker is outstanding.
    pub notified: AtomicBool,
    /// Host-side overflow (like a mailbox) for messages the buffer refused as `Full`, in order.
    pub spill: Mutex<VecDeque<Message>>,
    /// Observer input: the highest offset `tx` its storage completed (set before the ack).
    pub proven: AtomicU64,
    /// Observer input: its eviction was reported (set under the gate's write lock).
    pub evicted: AtomicBool,
}

/// Where [`HostWriter::offer`] put a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Offered {
    /// In the buffer or, behind earlier ones, in the spill queue.
    Kept,
    /// Refused for good (the buffer is stopped): back to the host, to be counted as returned.
    Returned,
}

impl HostWriter {
    /// A healthy writer over `buffer`.
    pub(crate) fn new(buffer: BatchBuffer) -> HostWriter {
        HostWriter {
            buffer,
            mode: AtomicMode::new(Mode::Healthy),
            notified: AtomicBool::new(false),
            spill: Mutex::new(VecDeque::new()),
            proven: AtomicU64::new(0),
            evicted: AtomicBool::new(false),
        }
    }

    /// Pushes into the buffer, keeping order with the spill queue.
    pub(crate) fn offer(&self, m: Message) -> Offered {
        let mut spill = self.spill.lock().unwrap();
        if self.buffer.state() != State::Running {
            return Offered::Returned;
        }
        if !spill.is_empty() {
            spill.push_back(m);
            return Offered::Kept;
        }
        match self.buffer.push_message(m) {
            Ok(()) => Offered::Kept,
            Err(e) if e.reason == PushRefusal::Full => {
                spill.push_back(e.message);
                Offered::Kept
            }
            Err(_) => Offered::Returned,
        }
    }

    /// Moves the spill queue into the buffer, in order, while it fits; messages the buffer
    /// refuses for good are counted in `returned`.
    pub(crate) fn refill(&self, returned: &AtomicU64) {
        let mut spill = self.spill.lock().unwrap();
        while let Some(m) = spill.pop_front() {
            match self.buffer.push_message(m) {
                Ok(()) => {}
                Err(e) if e.reason == PushRefusal::Full => {
                    spill.push_front(e.message);
                    break;
                }
                Err(_) => {
                    returned.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Returns a dead writer's spill queue to the host; returns how many messages it held.
    pub(crate) fn drain_spill(&self) -> u64 {
        self.spill.lock().unwrap().drain(..).count() as u64
    }

    /// Returns a dead writer's spill queue to the host, counted in `returned`.
    pub(crate) fn return_spill(&self, returned: &AtomicU64) {
        returned.fetch_add(self.drain_spill(), Ordering::Relaxed);
    }

    /// Marks a notification outstanding; true when none was (the caller then notifies).
    pub(crate) fn take_notify(&self) -> bool {
        // AcqRel: the push before this happens-before the worker's swap that clears the flag
        // and is followed by its poll (see `Worker::handle`).
        !self.notified.swap(true, Ordering::AcqRel)
    }
}

/// Counters of a thread that services writers (one set per worker, one more for the sweeper).
/// `E` holds what only one command's storage counts.
#[derive(Debug, Default)]
pub(crate) struct WorkerCounters<E> {
    /// Messages in acked batches.
    pub delivered: AtomicU64,
    /// Batches acked.
    pub batches: AtomicU64,
    /// Acks whose flush-link report failed.
    pub link_errors: AtomicU64,
    /// Acks refused as not in flight.
    pub late_acks: AtomicU64,
    /// Messages returned to the host without being accepted (refused by a stopped buffer, or
    /// left in a dead writer's spill queue).
    pub returned: AtomicU64,
    /// Messages handed back by buffers stopped mid-run (kills, evictions).
    pub handed_back_mid: AtomicU64,
    /// The storage's own counters.
    pub storage: E,
}

impl<E> WorkerCounters<E> {
    /// Acks `batch` on `w`'s buffer (its link reports the flush) and counts the outcome; true
    /// when the batch counts as delivered (acked, even if the link report failed).
    pub(crate) fn ack(&self, w: &HostWriter, batch: Batch) -> bool {
        let n = batch.len() as u64;
        match w.buffer.ack(batch) {
            Ok(()) => {}
            Err(AckError::Link(_)) => {
                self.link_errors.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.late_acks.fetch_add(1, Ordering::Relaxed);
                return false;
            }
        }
        self.delivered.fetch_add(n, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
        true
    }
}

/// The sum of one counter over every set.
pub(crate) fn counter_sum<C>(sets: &[C], f: impl Fn(&C) -> &AtomicU64) -> u64 {
    sets.iter().map(|c| f(c).load(Ordering::Relaxed)).sum()
}

/// Sends each worker the writers collected for it, and empties the lists.
pub(crate) fn flush_notify<F>(senders: &[Sender<Cmd<F>>], notify: &mut [Vec<u32>]) {
    for (k, v) in notify.iter_mut().enumerate() {
        if !v.is_empty() {
            let _ = senders[k].send(Cmd::Notify(std::mem::take(v)));
        }
    }
}

/// The shape of every writer's buffer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BufferShape {
    /// Messages per batch.
    pub max_batch: usize,
    /// Buffer capacity (messages).
    pub capacity: usize,
    /// Bytes per batch.
    pub max_bytes: u64,
    /// Buffer capacity (bytes).
    pub capacity_bytes: u64,
    /// Batch linger (ms).
    pub linger_ms: u64,
}

impl BufferShape {
    /// A writer whose buffer has this shape, runs on `clock` and reports flushes to `link`.
    ///
    /// One batch in flight per writer: acks complete in order, so "proven up to tx" is a
    /// prefix (the observer relies on it) and the link reports each batch's highest offset.
    pub(crate) fn writer(
        &self,
        clock: &Arc<dyn Clock>,
        link: Arc<dyn FlushLink>,
    ) -> Result<HostWriter, String> {
        let mut bc = BatchConfig::default();
        bc.max_messages = self.max_batch;
        bc.capacity_messages = self.capacity;
        bc.max_bytes = self.max_bytes;
        bc.capacity_bytes = self.capacity_bytes;
        bc.linger = Duration::from_millis(self.linger_ms);
        bc.max_inflight_batches = 1;
        bc.clock = Some(Arc::clone(clock));
        bc.flush_link = Some(link);
        let buffer = BatchBuffer::new(bc).map_err(|e| e.to_string())?;
        Ok(HostWriter::new(buffer))
    }
}
