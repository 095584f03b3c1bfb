//! The worker loop: worker `k` of `W` owns the writers `i ≡ k (mod W)`. It services a writer
//! when notified (poll its buffer: a ready batch goes to storage, otherwise a linger timer is
//! armed), completes batches when their storage is done, applies faults between two services
//! of a writer, and runs the graceful drain (admission closes once the host's spill queue is
//! empty; the worker ends when every live buffer reports `Closed`, or its budget is spent).
//!
//! What storage does with a batch differs per command; [`Storage`] supplies it.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use tidemark::batch::{Batch, Clock, Poll};

use super::writer::{HostWriter, Mode};

/// How long the final drain may take before buffers hand back what is left.
pub(crate) const DRAIN_BUDGET: Duration = Duration::from_secs(5);

/// A command to a worker; `F` is the command's fault action.
#[derive(Debug)]
pub(crate) enum Cmd<F> {
    /// These writers have new messages.
    Notify(Vec<u32>),
    /// A fault action on one of its writers.
    Fault(F),
    /// Graceful stop: drain every live writer, then exit.
    Drain,
}

/// A command's storage device and fault handling, driven by one [`Worker`].
pub(crate) trait Storage {
    /// What waits in storage with its batch.
    type Item;
    /// A fault action ([`Cmd::Fault`]).
    type Fault;

    /// Takes writer `i`'s ready batch (polled at `now`, `slow` when the writer is slow):
    /// returns when storage completes it (ns on the shared clock) and what to keep until then.
    fn take(&mut self, i: u32, batch: Batch, slow: bool, now: Duration) -> (u64, Self::Item);

    /// Storage of writer `i`'s batch completed and the writer still acks: makes it durable and
    /// acks it (or requeues it). The worker then services the writer again.
    fn complete(&mut self, i: u32, item: Self::Item);

    /// Applies a fault action; returns a writer to service right away, if any.
    fn fault(&mut self, f: Self::Fault) -> Option<u32>;

    /// Before the drain looks at writer `i`: returns true when the worker should service it
    /// first (a writer the host held back was just released).
    fn before_drain(&mut self, i: u32) -> bool;
}

/// What a worker works on, shared with the other threads.
#[derive(Clone, Copy)]
pub(crate) struct Shard<'a> {
    /// Every writer, by index (the worker touches only its own).
    pub writers: &'a [HostWriter],
    /// The clock of the tracker and every buffer.
    pub clock: &'a dyn Clock,
    /// This worker's number `k`.
    pub shard: usize,
    /// Worker count `W`.
    pub workers: usize,
    /// Where messages the buffers refuse for good are counted.
    pub returned: &'a AtomicU64,
}

/// A batch in storage.
struct Stored<T> {
    due: u64,
    seq: u64,
    writer: u32,
    item: T,
}

impl<T> PartialEq for Stored<T> {
    fn eq(&self, o: &Self) -> bool {
        (self.due, self.seq) == (o.due, o.seq)
    }
}
impl<T> Eq for Stored<T> {}
impl<T> PartialOrd for Stored<T> {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl<T> Ord for Stored<T> {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(o.due, o.seq))
    }
}

/// One worker thread's state.
pub(crate) struct Worker<'a, S: Storage> {
    at: Shard<'a>,
    storage: S,
    in_storage: BinaryHeap<Reverse<Stored<S::Item>>>,
    timers: BinaryHeap<Reverse<(u64, u32)>>,
    /// Per local writer: the armed linger timer (ns; 0 = none) and drain state.
    timer_due: Vec<u64>,
    stopping: Vec<bool>,
    closed: Vec<bool>,
    seq: u64,
    draining: Option<u64>,
    to_stop: Vec<u32>,
    open: usize,
}

impl<'a, S: Storage> Worker<'a, S> {
    /// A worker over `at` with `storage`.
    pub(crate) fn new(at: Shard<'a>, storage: S) -> Worker<'a, S> {
        let local = at.writers.len().div_ceil(at.workers);
        Worker {
            at,
            storage,
            in_storage: BinaryHeap::new(),
            timers: BinaryHeap::new(),
            timer_due: vec![0; local],
            stopping: vec![false; local],
            closed: vec![false; local],
            seq: 0,
            draining: None,
            to_stop: Vec::new(),
            open: 0,
        }
    }

    fn local(&self, i: u32) -> usize {
        i as usize / self.at.workers
    }

    fn now_ns(&self) -> u64 {
        self.at.clock.now().as_nanos() as u64
    }

    /// This worker's writers.
    fn own(&self) -> impl Iterator<Item = u32> + use<S> {
        let (n, step) = (self.at.writers.len(), self.at.workers);
        (self.at.shard..n).step_by(step).map(|i| i as u32)
    }

    /// Runs until the drain is complete (or its budget is spent).
    pub(crate) fn run(mut self, rx: Receiver<Cmd<S::Fault>>) {
        loop {
            let now = self.now_ns();
            while self
                .in_storage
                .peek()
                .is_some_and(|Reverse(s)| s.due <= now)
            {
                let Reverse(s) = self.in_storage.pop().expect("peeked");
                self.complete(s);
            }
            while self
                .timers
                .peek()
                .is_some_and(|&Reverse((due, _))| due <= now)
            {
                let Reverse((due, i)) = self.timers.pop().expect("peeked");
                let l = self.local(i);
                if self.timer_due[l] == due {
                    self.timer_due[l] = 0;
                    self.service(i);
                }
            }
            if let Some(deadline) = self.draining {
                self.advance_drain();
                let done = self.to_stop.is_empty() && self.open == 0 && self.in_storage.is_empty();
                if done || now > deadline + Duration::from_secs(1).as_nanos() as u64 {
                    return;
                }
            }
            let idle = if self.draining.is_some() { 2 } else { 50 };
            let mut next = now + Duration::from_millis(idle).as_nanos() as u64;
            if let Some(Reverse(s)) = self.in_storage.peek() {
                next = next.min(s.due);
            }
            if let Some(&Reverse((due, _))) = self.timers.peek() {
                next = next.min(due);
            }
            let wait = Duration::from_nanos(next.saturating_sub(self.now_ns()));
            match rx.recv_timeout(wait) {
                Ok(cmd) => {
                    self.handle(cmd);
                    while let Ok(cmd) = rx.try_recv() {
                        self.handle(cmd);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    if self.draining.is_none() {
                        self.start_drain();
                    }
                }
            }
        }
    }

    fn handle(&mut self, cmd: Cmd<S::Fault>) {
        match cmd {
            Cmd::Notify(list) => {
                for i in list {
                    // AcqRel: see `HostWriter::take_notify`; clear first, then poll, so a
                    // later push notifies again.
                    self.at.writers[i as usize]
                        .notified
                        .swap(false, Ordering::AcqRel);
                    self.service(i);
                }
            }
            Cmd::Fault(f) => {
                if let Some(i) = self.storage.fault(f) {
                    self.service(i);
                }
            }
            Cmd::Drain => self.start_drain(),
        }
    }

    fn start_drain(&mut self) {
        self.draining = Some(self.now_ns() + DRAIN_BUDGET.as_nanos() as u64);
        for i in self.own() {
            if self.storage.before_drain(i) {
                self.service(i);
            }
            if self.at.writers[i as usize].mode.load().serviced() {
                self.to_stop.push(i);
                self.open += 1;
            }
        }
    }

    /// Closes admission of every live writer whose spill queue is empty (the host's own queue
    /// drains first), and notices writers that died meanwhile.
    fn advance_drain(&mut self) {
        let Some(deadline) = self.draining else {
            return;
        };
        let mut list = std::mem::take(&mut self.to_stop);
        list.retain(|&i| {
            let w = &self.at.writers[i as usize];
            w.refill(self.at.returned);
            if !w.spill.lock().unwrap().is_empty() {
                return true;
            }
            w.buffer.begin_stop(Duration::from_nanos(deadline));
            let l = self.local(i);
            self.stopping[l] = true;
            self.service(i);
            false
        });
        self.to_stop = list;
        // Writers evicted (or otherwise dead) while draining will never close through us.
        if self.in_storage.is_empty() && self.to_stop.is_empty() && self.open > 0 {
            for i in self.own() {
                let l = self.local(i);
                if self.stopping[l] && !self.closed[l] {
                    if !self.at.writers[i as usize].mode.load().serviced() {
                        self.closed[l] = true;
                        self.open -= 1;
                    } else {
                        self.service(i);
                    }
                }
            }
        }
    }

    /// Takes the writer's next batch into storage, or arms its linger timer.
    fn service(&mut self, i: u32) {
        let w = &self.at.writers[i as usize];
        let m = w.mode.load();
        if !m.serviced() {
            return;
        }
        w.refill(self.at.returned);
        let now = self.at.clock.now();
        let l = self.local(i);
        match w.buffer.poll_batch(now) {
            Poll::Ready(batch) => {
                let (due, item) = self.storage.take(i, batch, m == Mode::Slow, now);
                self.seq += 1;
                self.in_storage.push(Reverse(Stored {
                    due,
                    seq: self.seq,
                    writer: i,
                    item,
                }));
            }
            Poll::Wait(Some(d)) => {
                let due = (now + d).as_nanos() as u64;
                if self.timer_due[l] == 0 || due < self.timer_due[l] {
                    self.timer_due[l] = due;
                    self.timers.push(Reverse((due, i)));
                }
            }
            Poll::Wait(None) => {}
            Poll::Closed if self.stopping[l] && !self.closed[l] => {
                self.closed[l] = true;
                self.open -= 1;
            }
            Poll::Closed => {}
        }
    }

    fn complete(&mut self, s: Stored<S::Item>) {
        if matches!(
            self.at.writers[s.writer as usize].mode.load(),
            Mode::Wedged | Mode::Killed | Mode::Evicted
        ) {
            // Never acked: the stop report hands the batch back (outcome unknown).
            return;
        }
        self.storage.complete(s.writer, s.item);
        self.service(s.writer);
    }
}
