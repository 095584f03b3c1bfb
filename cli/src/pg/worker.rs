//! The storage of the workers (the worker loop itself is `pipeline_common::worker`): worker
//! `k` owns writers `i ≡ k (mod W)`; each batch waits the storage latency, is appended to the
//! writer's file (fsync optional) and only then marked proven and acked (the buffer's link
//! reports the flush to the tracker). It also applies faults to its writers.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tidemark::batch::Batch;

use super::config::FaultKind;
use super::pipeline::{Shared, WorkerCounters};
use crate::pipeline_common::worker::Storage;
use crate::pipeline_common::writer::Mode;

/// Worker `shard`'s storage: the writers' append-only files.
pub(crate) struct FileSink<'a> {
    sh: &'a Shared,
    shard: usize,
}

impl<'a> FileSink<'a> {
    /// Worker `shard`'s storage.
    pub(crate) fn new(sh: &'a Shared, shard: usize) -> FileSink<'a> {
        FileSink { sh, shard }
    }

    fn counters(&self) -> &'a WorkerCounters {
        &self.sh.host.work[self.shard]
    }
}

impl Storage for FileSink<'_> {
    type Item = Batch;
    type Fault = usize;

    fn take(&mut self, _i: u32, batch: Batch, slow: bool, now: Duration) -> (u64, Batch) {
        let cfg = &self.sh.cfg;
        let latency_ms = if slow {
            cfg.common.slow_ms
        } else {
            cfg.latency_ms
        };
        let due = (now + Duration::from_millis(latency_ms)).as_nanos() as u64;
        (due, batch)
    }

    /// Storage latency is over: append, prove, ack.
    fn complete(&mut self, i: u32, batch: Batch) {
        let sh = self.sh;
        let w = &sh.host.writers[i as usize];
        let c = self.counters();
        if let Err(e) = sh.store.append(i, &batch) {
            c.storage.store_errors.fetch_add(1, Ordering::Relaxed);
            sh.error(format!("store of writer {i}: {e}"));
            let _ = w.buffer.nack(batch, true);
            return;
        }
        let bytes = batch.bytes();
        let highest = batch.highest_offset().map_or(0, |o| o.tx);
        // Durable now: tell the observer first (SeqCst), then the tracker through the link.
        w.proven.fetch_max(highest, Ordering::SeqCst);
        if c.ack(w, batch) {
            c.storage.bytes.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// Applies fault number `k`.
    fn fault(&mut self, k: usize) -> Option<u32> {
        let sh = self.sh;
        let (kind, i) = {
            let f = sh.faults.lock().unwrap();
            (f[k].planned.kind, f[k].planned.writer)
        };
        let w = &sh.host.writers[i as usize];
        if !w.mode.load().serviced() {
            return None; // already evicted: the report shows it unapplied
        }
        let now_ms = sh.now_ms();
        match kind {
            FaultKind::Kill => {
                // No cleanup: its batch in storage is abandoned (never stored, never acked),
                // its buffer is left as it is. A process monitor reports the death.
                w.mode.store(Mode::Killed);
                sh.source.teardown(i, now_ms);
            }
            FaultKind::Wedge => w.mode.store(Mode::Wedged),
            FaultKind::Slow => w.mode.store(Mode::Slow),
        }
        if kind.pins() {
            sh.wants_anchor[i as usize].store(true, Ordering::Relaxed);
            sh.anchor_requests.lock().unwrap().push(i);
        }
        sh.faults.lock().unwrap()[k].applied_ms = Some(now_ms.saturating_sub(sh.start_ms));
        None
    }

    fn before_drain(&mut self, _i: u32) -> bool {
        false
    }
}
