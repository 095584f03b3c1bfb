//! The sweeper loop: every `P`, under the gate's write lock, `sweep(now)` and `take_events`;
//! each evicted writer is marked for the observer (in the same critical section, so a sample
//! never sees an ack that reflects an eviction it cannot see) and moved to [`Mode::Evicted`].
//! What the host then does with the evicted writers (stop their buffers, record the eviction)
//! is the caller's.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use tidemark::{Event, EvictReason, Tracker};

use super::writer::{HostWriter, Mode};

/// What the sweeper measured.
#[derive(Clone, Debug, Default)]
pub(crate) struct SweepLog {
    /// Sweeps run.
    pub sweeps: u64,
    /// The largest gap between two consecutive sweeps' `now` (ms).
    pub max_gap_ms: u64,
    /// Challenges issued.
    pub challenges: u64,
    /// `run_backlog` steps taken (`pg` only).
    pub backlog_steps: u64,
    last_ms: Option<u64>,
}

/// A writer the last sweep evicted.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Evicted {
    /// Its index.
    pub writer: u32,
    /// Why.
    pub reason: EvictReason,
    /// Its mode before the eviction.
    pub before: Mode,
}

/// What the sweeper works on, shared with the other threads.
pub(crate) struct Sweeper<'a> {
    /// The tracker to sweep.
    pub tracker: &'a Tracker,
    /// Every writer, by index (= tracker slot index).
    pub writers: &'a [HostWriter],
    /// Sweeps (write) vs observer samples (read).
    pub gate: &'a RwLock<()>,
    /// Where the measurements go.
    pub log: &'a Mutex<SweepLog>,
    /// The sweep period `P` (ms).
    pub period_ms: u64,
    /// Set when the sweeper stops.
    pub stop: &'a AtomicBool,
    /// Milliseconds on the tracker's clock.
    pub now_ms: &'a dyn Fn() -> u64,
}

impl Sweeper<'_> {
    /// Sweeps every `P` until told to stop; after each sweep (gate released) calls `after`
    /// with the sweep's `now` and the writers it evicted.
    pub(crate) fn run(&self, mut after: impl FnMut(u64, &[Evicted])) {
        let period = Duration::from_millis(self.period_ms);
        let start = Instant::now();
        let mut tick = 0u32;
        let mut events = Vec::new();
        let mut evicted = Vec::new();
        while !self.stop.load(Ordering::Relaxed) {
            tick += 1;
            let target = start + period * tick;
            let now = Instant::now();
            if target > now {
                std::thread::sleep(target - now);
            }
            let now_ms = (self.now_ms)();
            evicted.clear();
            {
                let _gate = self.gate.write().unwrap();
                let out = self.tracker.sweep(now_ms);
                events.clear();
                self.tracker.take_events(&mut events, usize::MAX);
                for e in &events {
                    if let Event::Evicted(id, reason) = *e {
                        let w = &self.writers[id.index() as usize];
                        // SeqCst: read by the sampler under the gate's read lock.
                        w.evicted.store(true, Ordering::SeqCst);
                        let before = w.mode.swap(Mode::Evicted);
                        evicted.push(Evicted {
                            writer: id.index(),
                            reason,
                            before,
                        });
                    }
                }
                let mut log = self.log.lock().unwrap();
                log.sweeps += 1;
                log.challenges += out.challenged as u64;
                if let Some(last) = log.last_ms {
                    log.max_gap_ms = log.max_gap_ms.max(now_ms.saturating_sub(last));
                }
                log.last_ms = Some(now_ms);
            }
            after(now_ms, &evicted);
        }
    }
}
