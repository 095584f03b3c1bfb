//! The workers: each owns a shard of writers and one simulated storage device.
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use tidemark::DownClass;
use tidemark::batch::{AckError, Batch, Poll, PushRefusal};

use super::*;

/// A batch in storage.
struct Stored {
    due: u64,
    seq: u64,
    writer: u32,
    /// `None` when the (buggy) early ack already gave it back.
    batch: Option<Batch>,
    highest_tx: u64,
}

impl PartialEq for Stored {
    fn eq(&self, o: &Self) -> bool {
        (self.due, self.seq) == (o.due, o.seq)
    }
}
impl Eq for Stored {}
impl PartialOrd for Stored {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Stored {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(o.due, o.seq))
    }
}

/// One worker: a shard of writers and one storage device.
pub(crate) struct Worker<'a> {
    sh: &'a Shared,
    shard: usize,
    rng: Rng,
    storage: BinaryHeap<Reverse<Stored>>,
    timers: BinaryHeap<Reverse<(u64, u32)>>,
    /// Per local writer: the armed linger timer (ns; 0 = none), the last delivered tx, and
    /// drain state.
    timer_due: Vec<u64>,
    last_delivered: Vec<u64>,
    stopping: Vec<bool>,
    closed: Vec<bool>,
    busy_until: u64,
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
            rng: Rng::new(sh.cfg.seed, 100 + shard as u64),
            storage: BinaryHeap::new(),
            timers: BinaryHeap::new(),
            timer_due: vec![0; local],
            last_delivered: vec![0; local],
            stopping: vec![false; local],
            closed: vec![false; local],
            busy_until: 0,
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
            while self.storage.peek().is_some_and(|Reverse(s)| s.due <= now) {
                let Reverse(s) = self.storage.pop().expect("peeked");
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
                let done = self.to_stop.is_empty() && self.open == 0 && self.storage.is_empty();
                if done || now > deadline + Duration::from_secs(1).as_nanos() as u64 {
                    return;
                }
            }
            let idle = if self.draining.is_some() { 2 } else { 50 };
            let mut next = now + Duration::from_millis(idle).as_nanos() as u64;
            if let Some(Reverse(s)) = self.storage.peek() {
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

    fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Notify(list) => {
                for i in list {
                    // AcqRel: see the sequencer; clear first, then poll, so a later push
                    // notifies again.
                    self.sh.writers[i as usize]
                        .notified
                        .swap(false, Ordering::AcqRel);
                    self.service(i);
                }
            }
            Cmd::Fault(k) => self.apply_fault(k),
            Cmd::Resume(k) => {
                let i = self.sh.faults.lock().unwrap()[k].planned.writer;
                self.resume(i);
            }
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
        let now_ms = sh.now_ms();
        let alive = |m: u8| matches!(m, mode::HEALTHY | mode::SLOW);
        if !alive(w.mode.load(Ordering::Relaxed)) {
            return; // already evicted (should not happen): the report shows it unapplied
        }
        match kind {
            FaultKind::Kill => {
                w.mode.store(mode::KILLED, Ordering::Relaxed);
                let report = w.buffer.stop(sh.clock.now());
                self.counters()
                    .handed_back_mid
                    .fetch_add(report.handed_back_count(), Ordering::Relaxed);
                sh.return_spill(w, self.counters());
                // What a process monitor reports for a killed process.
                let _ = sh.tracker.down(w.id, DownClass::Teardown, now_ms);
                sh.request_anchor(i);
            }
            FaultKind::Wedge => {
                w.mode.store(mode::WEDGED, Ordering::Relaxed);
                sh.request_anchor(i);
            }
            FaultKind::Slow => w.mode.store(mode::SLOW, Ordering::Relaxed),
            FaultKind::Pause => {
                if sh.cfg.inject_bug != Some(Bug::ForgetPause) {
                    let _ = sh.tracker.pause(w.id);
                }
                w.mode.store(mode::PAUSED, Ordering::Relaxed);
            }
        }
        sh.faults.lock().unwrap()[k].applied_ms = Some(now_ms);
    }

    fn resume(&mut self, i: u32) {
        let sh = self.sh;
        let w = &sh.writers[i as usize];
        if w.mode
            .compare_exchange(
                mode::PAUSED,
                mode::HEALTHY,
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return;
        }
        let now_ms = sh.now_ms();
        if sh.cfg.inject_bug != Some(Bug::ForgetPause) {
            let _ = sh.tracker.resume(w.id, now_ms);
        }
        if let Some(&k) = sh.fault_of.get(&i) {
            sh.faults.lock().unwrap()[k]
                .resumed_ms
                .get_or_insert(now_ms);
        }
        self.service(i);
    }

    fn start_drain(&mut self) {
        let sh = self.sh;
        self.draining = Some(self.now_ns() + DRAIN_BUDGET.as_nanos() as u64);
        let mut i = self.shard as u32;
        while (i as usize) < sh.cfg.writers {
            let m = sh.writers[i as usize].mode.load(Ordering::Relaxed);
            if m == mode::PAUSED {
                self.resume(i);
            }
            let m = sh.writers[i as usize].mode.load(Ordering::Relaxed);
            if matches!(m, mode::HEALTHY | mode::SLOW) {
                self.to_stop.push(i);
                self.open += 1;
            }
            i += sh.cfg.workers as u32;
        }
    }

    /// Closes admission of every live writer whose spill queue is empty (the host's own queue
    /// drains first), and notices writers evicted meanwhile.
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
        // Writers evicted (or otherwise dead) while draining will never close through us.
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
    fn refill(&self, w: &SimWriter) {
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
            Poll::Ready(batch) => self.store(i, batch, m == mode::SLOW),
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

    fn store(&mut self, i: u32, batch: Batch, slow: bool) {
        let cfg = &self.sh.cfg;
        let now = self.now_ns();
        let start = now.max(self.busy_until);
        self.busy_until =
            start + (batch.bytes() as u128 * 1_000_000_000 / cfg.throughput as u128) as u64;
        let latency = if slow {
            cfg.slow_ms * 1_000_000
        } else {
            cfg.latency_us * 1_000
        };
        let highest_tx = batch.highest_offset().map_or(0, |o| o.tx);
        let batch = if self.sh.cfg.inject_bug == Some(Bug::EarlyAck) {
            // The bug: report the batch flushed when it is taken, not when it is durable.
            self.check_order(i, &batch);
            let n = batch.len() as u64;
            self.ack(i, batch, n);
            None
        } else {
            Some(batch)
        };
        self.seq += 1;
        self.storage.push(Reverse(Stored {
            due: self.busy_until + latency,
            seq: self.seq,
            writer: i,
            batch,
            highest_tx,
        }));
    }

    fn check_order(&mut self, i: u32, batch: &Batch) {
        let l = self.local(i);
        for m in batch.iter() {
            let tx = m.offset.map_or(0, |o| o.tx);
            if tx <= self.last_delivered[l] {
                self.counters()
                    .order_violations
                    .fetch_add(1, Ordering::Relaxed);
            }
            self.last_delivered[l] = tx;
        }
    }

    fn complete(&mut self, s: Stored) {
        let sh = self.sh;
        let w = &sh.writers[s.writer as usize];
        let m = w.mode.load(Ordering::Relaxed);
        if matches!(m, mode::WEDGED | mode::KILLED | mode::EVICTED) {
            // Never acked: the stop report hands it back (outcome unknown).
            return;
        }
        let Some(batch) = s.batch else {
            // Early-ack bug: already acked; only now is it durable.
            w.proven.fetch_max(s.highest_tx, Ordering::SeqCst);
            self.service(s.writer);
            return;
        };
        if self.rng.chance(sh.cfg.nack_rate) {
            self.counters().nacks.fetch_add(1, Ordering::Relaxed);
            let _ = w.buffer.nack(batch, true);
            self.service(s.writer);
            return;
        }
        self.check_order(s.writer, &batch);
        // Durable now: tell the observer first (SeqCst; then the tracker hears of it through
        // the link, inside `ack`).
        w.proven.fetch_max(s.highest_tx, Ordering::SeqCst);
        let n = batch.len() as u64;
        self.ack(s.writer, batch, n);
        self.service(s.writer);
    }

    fn ack(&mut self, i: u32, batch: Batch, n: u64) {
        let c = self.counters();
        match self.sh.writers[i as usize].buffer.ack(batch) {
            Ok(()) => {
                c.delivered.fetch_add(n, Ordering::Relaxed);
                c.batches.fetch_add(1, Ordering::Relaxed);
            }
            Err(AckError::Link(_)) => {
                c.delivered.fetch_add(n, Ordering::Relaxed);
                c.batches.fetch_add(1, Ordering::Relaxed);
                c.link_errors.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                c.late_acks.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
