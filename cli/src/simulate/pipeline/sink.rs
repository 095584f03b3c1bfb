//! The simulated storage sink of each worker (the worker loop itself is
//! `pipeline_common::worker`): one storage device per worker, modelled as
//! `max(now, busy) + bytes/throughput + latency`, transient errors at `--nack-rate`, the
//! per-writer order check, and the faults (kill, wedge, slow, pause) the worker applies.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tidemark::DownClass;
use tidemark::batch::Batch;

use super::*;

/// A batch in storage.
pub(crate) struct InStorage {
    /// `None` when the (buggy) early ack already gave it back.
    batch: Option<Batch>,
    highest_tx: u64,
}

/// Worker `shard`'s storage device and fault handling.
pub(crate) struct Sink<'a> {
    sh: &'a Shared,
    shard: usize,
    rng: Rng,
    /// Per local writer: the last delivered tx.
    last_delivered: Vec<u64>,
    busy_until: u64,
}

impl<'a> Sink<'a> {
    /// Worker `shard`'s sink.
    pub(crate) fn new(sh: &'a Shared, shard: usize) -> Sink<'a> {
        let local = sh.cfg.common.writers.div_ceil(sh.cfg.common.workers);
        Sink {
            sh,
            shard,
            rng: Rng::new(sh.cfg.common.seed, 100 + shard as u64),
            last_delivered: vec![0; local],
            busy_until: 0,
        }
    }

    fn counters(&self) -> &'a WorkerCounters {
        &self.sh.host.work[self.shard]
    }

    fn now_ns(&self) -> u64 {
        self.sh.host.clock.now().as_nanos() as u64
    }

    fn apply_fault(&mut self, k: usize) {
        let sh = self.sh;
        let (kind, i) = {
            let f = sh.faults.lock().unwrap();
            (f[k].planned.kind, f[k].planned.writer)
        };
        let w = &sh.host.writers[i as usize];
        let now_ms = sh.now_ms();
        if !w.mode.load().serviced() {
            return; // already evicted (should not happen): the report shows it unapplied
        }
        match kind {
            FaultKind::Kill => {
                w.mode.store(Mode::Killed);
                let report = w.buffer.stop(sh.host.clock.now());
                self.counters()
                    .handed_back_mid
                    .fetch_add(report.handed_back_count(), Ordering::Relaxed);
                w.return_spill(&self.counters().returned);
                // What a process monitor reports for a killed process.
                let _ = sh
                    .tracker
                    .down(sh.ids[i as usize], DownClass::Teardown, now_ms);
                sh.request_anchor(i);
            }
            FaultKind::Wedge => {
                w.mode.store(Mode::Wedged);
                sh.request_anchor(i);
            }
            FaultKind::Slow => w.mode.store(Mode::Slow),
            FaultKind::Pause => {
                if sh.cfg.inject_bug != Some(Bug::ForgetPause) {
                    let _ = sh.tracker.pause(sh.ids[i as usize]);
                }
                w.mode.store(Mode::Paused);
            }
        }
        sh.faults.lock().unwrap()[k].applied_ms = Some(now_ms);
    }

    /// Lifts writer `i`'s pause; true when it was paused (the worker then services it).
    fn resume(&mut self, i: u32) -> bool {
        let sh = self.sh;
        if !sh.host.writers[i as usize]
            .mode
            .change(Mode::Paused, Mode::Healthy)
        {
            return false;
        }
        let now_ms = sh.now_ms();
        if sh.cfg.inject_bug != Some(Bug::ForgetPause) {
            let _ = sh.tracker.resume(sh.ids[i as usize], now_ms);
        }
        if let Some(&k) = sh.fault_of.get(&i) {
            sh.faults.lock().unwrap()[k]
                .resumed_ms
                .get_or_insert(now_ms);
        }
        true
    }

    fn check_order(&mut self, i: u32, batch: &Batch) {
        let l = i as usize / self.sh.cfg.common.workers;
        for m in batch.iter() {
            let tx = m.offset.map_or(0, |o| o.tx);
            if tx <= self.last_delivered[l] {
                self.counters()
                    .storage
                    .order_violations
                    .fetch_add(1, Ordering::Relaxed);
            }
            self.last_delivered[l] = tx;
        }
    }
}

impl worker_loop::Storage for Sink<'_> {
    type Item = InStorage;
    type Fault = FaultCmd;

    fn take(&mut self, i: u32, batch: Batch, slow: bool, _now: Duration) -> (u64, InStorage) {
        let cfg = &self.sh.cfg;
        let now = self.now_ns();
        let start = now.max(self.busy_until);
        self.busy_until =
            start + (batch.bytes() as u128 * 1_000_000_000 / cfg.throughput as u128) as u64;
        let latency = if slow {
            cfg.common.slow_ms * 1_000_000
        } else {
            cfg.latency_us * 1_000
        };
        let highest_tx = batch.highest_offset().map_or(0, |o| o.tx);
        let batch = if cfg.inject_bug == Some(Bug::EarlyAck) {
            // The bug: report the batch flushed when it is taken, not when it is durable.
            self.check_order(i, &batch);
            self.counters()
                .ack(&self.sh.host.writers[i as usize], batch);
            None
        } else {
            Some(batch)
        };
        (self.busy_until + latency, InStorage { batch, highest_tx })
    }

    fn complete(&mut self, i: u32, s: InStorage) {
        let w = &self.sh.host.writers[i as usize];
        let Some(batch) = s.batch else {
            // Early-ack bug: already acked; only now is it durable.
            w.proven.fetch_max(s.highest_tx, Ordering::SeqCst);
            return;
        };
        if self.rng.chance(self.sh.cfg.nack_rate) {
            self.counters()
                .storage
                .nacks
                .fetch_add(1, Ordering::Relaxed);
            let _ = w.buffer.nack(batch, true);
            return;
        }
        self.check_order(i, &batch);
        // Durable now: tell the observer first (SeqCst; then the tracker hears of it through
        // the link, inside `ack`).
        w.proven.fetch_max(s.highest_tx, Ordering::SeqCst);
        self.counters().ack(w, batch);
    }

    fn fault(&mut self, f: FaultCmd) -> Option<u32> {
        match f {
            FaultCmd::Apply(k) => {
                self.apply_fault(k);
                None
            }
            FaultCmd::Resume(k) => {
                let i = self.sh.faults.lock().unwrap()[k].planned.writer;
                self.resume(i).then_some(i)
            }
        }
    }

    fn before_drain(&mut self, i: u32) -> bool {
        self.sh.host.writers[i as usize].mode.load() == Mode::Paused && self.resume(i)
    }
}
