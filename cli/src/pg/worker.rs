//! The worker pool: worker `k` owns writers `i ≡ k (mod W)`, takes their batches, waits the
//! storage latency, appends each batch to the writer's file (fsync optional) and only then
//! marks it proven and acks it (the buffer's link reports the flush to the tracker). It also
//! applies faults to its writers and runs the graceful drain.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use tidemark::batch::{AckError, Batch, Poll, PushRefusal};

use super::config::FaultKind;
use super::pipeline::{Cmd, PgWriter, Shared, WorkerCounters, mode};

/// How long the final drain may take before buffers hand back what is left.
pub(crate) const DRAIN_BUDGET: Duration = Duration::from_secs(5);

/// A batch waiting out its storage latency.
struct Pending {
    due: u64,
    seq: u64,
    writer: u32,
    batch: Batch,
}

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        (self.due, self.seq) == (o.due, o.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(o.due, o.seq))
    }
}

/// One worker thread's state.
pub(crate) struct Worker<'a> {
    sh: &'a Shared,
    shard: usize,
    storage: BinaryHeap<Reverse<Pending>>,
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

impl<'a> Worker<'a> {
    /// Worker `shard` of `sh`.
    pub(crate) fn new(sh: &'a Shared, shard: usize) -> Worker<'a> {
        let local = sh.cfg.writers.div_ceil(sh.cfg.workers);
        Worker {
            sh,
            shard,
            storage: BinaryHeap::new(),
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

    fn counters(&self) -> &'a WorkerCounters {
        &self.sh.work[self.shard]
    }

    fn local(&self, i: u32) -> usize {
        i as usize / self.sh.cfg.workers
    }

    fn now_ns(&self) -> u64 {
        self.sh.clock.now().as_nanos() as u64
    }

    /// Runs until the drain is complete (or its budget is spent).
    pub(crate) fn run(mut self, rx: Receiver<Cmd>) {
        loop {
            let now = self.now_ns();
            while self.storage.peek().is_some_and(|Reverse(p)| p.due <= now) {
                let Reverse(p) = self.storage.pop().expect("peeked");
                self.complete(p);
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
                let done = self.to_stop.is_empty() && self.open == 0 && self.storage.is_empty();
                if done || now > deadline + Duration::from_secs(1).as_nanos() as u64 {
                    return;
                }
            }
            let idle = if self.draining.is_some() { 2 } else { 50 };
            let mut next = now + Duration::from_millis(idle).as_nanos() as u64;
            if let Some(Reverse(p)) = self.storage.peek() {
                next = next.min(p.due);
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

    fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Notify(list) => {
                for i in list {
                    // AcqRel: see the dispatcher; clear first, then poll, so a later push
                    // notifies again.
                    self.sh.writers[i as usize]
                        .notified
                        .swap(false, Ordering::AcqRel);
                    self.service(i);
                }
            }
            Cmd::Fault(k) => self.apply_fault(k),
            Cmd::Drain => self.start_drain(),
        }
    }

    fn apply_fault(&mut self, k: usize) {
        let sh = self.sh;
        let (kind, i) = {
            let f = sh.faults.lock().unwrap();
            (f[k].planned.kind, f[k].planned.writer)
        };
        let w = &sh.writers[i as usize];
        if !matches!(w.mode.load(Ordering::Relaxed), mode::HEALTHY | mode::SLOW) {
            return; // already evicted: the report shows it unapplied
        }
        let now_ms = sh.now_ms();
        match kind {
            FaultKind::Kill => {
                // No cleanup: its batch in storage is abandoned (never stored, never acked),
                // its buffer is left as it is. A process monitor reports the death.
                w.mode.store(mode::KILLED, Ordering::Relaxed);
                sh.source.teardown(i, now_ms);
            }
            FaultKind::Wedge => w.mode.store(mode::WEDGED, Ordering::Relaxed),
            FaultKind::Slow => w.mode.store(mode::SLOW, Ordering::Relaxed),
        }
        if kind.pins() {
            w.wants_anchor.store(true, Ordering::Relaxed);
            sh.anchor_requests.lock().unwrap().push(i);
        }
        sh.faults.lock().unwrap()[k].applied_ms = Some(now_ms.saturating_sub(sh.start_ms));
    }

    fn start_drain(&mut self) {
        let sh = self.sh;
        self.draining = Some(self.now_ns() + DRAIN_BUDGET.as_nanos() as u64);
        let mut i = self.shard as u32;
        while (i as usize) < sh.cfg.writers {
            let m = sh.writers[i as usize].mode.load(Ordering::Relaxed);
            if matches!(m, mode::HEALTHY | mode::SLOW) {
                self.to_stop.push(i);
                self.open += 1;
            }
            i += sh.cfg.workers as u32;
        }
    }

    /// Closes admission of every live writer whose spill queue is empty, and notices writers
    /// that died meanwhile.
    fn advance_drain(&mut self) {
        let Some(deadline) = self.draining else {
            return;
        };
        let mut list = std::mem::take(&mut self.to_stop);
        list.retain(|&i| {
            let w = &self.sh.writers[i as usize];
            self.refill(w);
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
        if self.storage.is_empty() && self.to_stop.is_empty() && self.open > 0 {
            let mut i = self.shard as u32;
            while (i as usize) < self.sh.cfg.writers {
                let l = self.local(i);
                if self.stopping[l] && !self.closed[l] {
                    let m = self.sh.writers[i as usize].mode.load(Ordering::Relaxed);
                    if !matches!(m, mode::HEALTHY | mode::SLOW) {
                        self.closed[l] = true;
                        self.open -= 1;
                    } else {
                        self.service(i);
                    }
                }
                i += self.sh.cfg.workers as u32;
            }
        }
    }

    /// Moves the writer's spill queue into its buffer, in order, while it fits.
    fn refill(&self, w: &PgWriter) {
        let mut spill = w.spill.lock().unwrap();
        while let Some(m) = spill.pop_front() {
            match w.buffer.push_message(m) {
                Ok(()) => {}
                Err(e) if e.reason == PushRefusal::Full => {
                    spill.push_front(e.message);
                    break;
                }
                Err(_) => {
                    self.counters().returned.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Takes the writer's next batch into storage, or arms its linger timer.
    fn service(&mut self, i: u32) {
        let sh = self.sh;
        let w = &sh.writers[i as usize];
        let m = w.mode.load(Ordering::Relaxed);
        if !matches!(m, mode::HEALTHY | mode::SLOW) {
            return;
        }
        self.refill(w);
        let now = sh.clock.now();
        let l = self.local(i);
        match w.buffer.poll_batch(now) {
            Poll::Ready(batch) => {
                let latency_ms = if m == mode::SLOW {
                    sh.cfg.slow_ms
                } else {
                    sh.cfg.latency_ms
                };
                self.seq += 1;
                self.storage.push(Reverse(Pending {
                    due: (now + Duration::from_millis(latency_ms)).as_nanos() as u64,
                    seq: self.seq,
                    writer: i,
                    batch,
                }));
            }
            Poll::Wait(Some(d)) => {
                let due = (now + d).as_nanos() as u64;
                if self.timer_due[l] == 0 || due < self.timer_due[l] {
                    self.timer_due[l] = due;
                    self.timers.push(Reverse((due, i)));
                }
            }
            Poll::Closed if self.stopping[l] && !self.closed[l] => {
                self.closed[l] = true;
                self.open -= 1;
            }
            _ => {}
        }
    }

    /// Storage latency is over: append, prove, ack.
    fn complete(&mut self, p: Pending) {
        let sh = self.sh;
        let w = &sh.writers[p.writer as usize];
        if !matches!(w.mode.load(Ordering::Relaxed), mode::HEALTHY | mode::SLOW) {
            // Killed, wedged or evicted: never stored, never acked (the stop report hands the
            // batch back with its outcome unknown).
            return;
        }
        let c = self.counters();
        if let Err(e) = sh.store.append(p.writer, &p.batch) {
            c.store_errors.fetch_add(1, Ordering::Relaxed);
            sh.error(format!("store of writer {}: {e}", p.writer));
            let _ = w.buffer.nack(p.batch, true);
            self.service(p.writer);
            return;
        }
        let bytes = p.batch.bytes();
        let highest = p.batch.highest_offset().map_or(0, |o| o.tx);
        // Durable now: tell the observer first (SeqCst), then the tracker through the link.
        w.proven.fetch_max(highest, Ordering::SeqCst);
        let n = p.batch.len() as u64;
        match w.buffer.ack(p.batch) {
            Ok(()) => {}
            Err(AckError::Link(_)) => {
                c.link_errors.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                c.late_acks.fetch_add(1, Ordering::Relaxed);
                self.service(p.writer);
                return;
            }
        }
        c.delivered.fetch_add(n, Ordering::Relaxed);
        c.batches.fetch_add(1, Ordering::Relaxed);
        c.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.service(p.writer);
    }
}
