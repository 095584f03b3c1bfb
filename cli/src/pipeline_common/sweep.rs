//! The sweeper loop: every `P`, under the gate's write lock, `sweep(now)` and `take_events`;
//! each evicted writer is marked for the observer (in the same critical section, so a sample
//! never sees an ack that reflects an eviction it cannot see) and moved to [`Mode::Evicted`].
//! The sweeper then stops the evicted writers' buffers and returns their spill queues; what
//! else the host does (record the eviction) is the caller's.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tidemark::{Event, EvictReason, Tracker};

use super::host::Host;
use super::writer::Mode;

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
    /// What its buffer handed back when it was stopped at the eviction.
    pub handed_back: u64,
}

/// What the sweeper works on, shared with the other threads.
pub(crate) struct Sweeper<'a, E> {
    /// The tracker to sweep.
    pub tracker: &'a Tracker,
    /// The writers, the clock, the gate, the log, the period and the stop flag.
    pub host: &'a Host<E>,
    /// A killed writer's buffer was stopped, and counted, at the kill: what it hands back at
    /// its eviction is not counted again.
    pub killed_counted: bool,
}

impl<E> Sweeper<'_, E> {
    /// Sweeps every `P` until told to stop. After each sweep (gate released) calls `after_sweep`,
    /// then invalidates each writer it evicted — its buffer stops and hands back what it held
    /// (counted in the sweeper's `handed_back_mid`), its spill queue is returned — and calls
    /// `on_evicted` with the sweep's `now` and the eviction.
    pub(crate) fn run(
        &self,
        mut after_sweep: impl FnMut(),
        mut on_evicted: impl FnMut(u64, &Evicted),
    ) {
        let host = self.host;
        let counters = host.sweeper_counters();
        let period = Duration::from_millis(host.sweep_ms);
        let start = Instant::now();
        let mut tick = 0u32;
        let mut events = Vec::new();
        let mut evicted = Vec::new();
        while !host.stop_background.load(Ordering::Relaxed) {
            tick += 1;
            let target = start + period * tick;
            let now = Instant::now();
            if target > now {
                std::thread::sleep(target - now);
            }
            let now_ms = host.now_ms();
            evicted.clear();
            {
                let _gate = host.gate.write().unwrap();
                let out = self.tracker.sweep(now_ms);
                events.clear();
                self.tracker.take_events(&mut events, usize::MAX);
                for e in &events {
                    if let Event::Evicted(id, reason) = *e {
                        let w = &host.writers[id.index() as usize];
                        // SeqCst: read by the sampler under the gate's read lock.
                        w.evicted.store(true, Ordering::SeqCst);
                        let before = w.mode.swap(Mode::Evicted);
                        evicted.push(Evicted {
                            writer: id.index(),
                            reason,
                            before,
                            handed_back: 0,
                        });
                    }
                }
                let mut log = host.sweeps.lock().unwrap();
                log.sweeps += 1;
                log.challenges += out.challenged as u64;
                if let Some(last) = log.last_ms {
                    log.max_gap_ms = log.max_gap_ms.max(now_ms.saturating_sub(last));
                }
                log.last_ms = Some(now_ms);
            }
            after_sweep();
            for e in &mut evicted {
                let w = &host.writers[e.writer as usize];
                let report = w.buffer.stop(host.clock.now());
                e.handed_back = report.handed_back_count();
                if !(self.killed_counted && e.before == Mode::Killed) {
                    counters
                        .handed_back_mid
                        .fetch_add(e.handed_back, Ordering::Relaxed);
                }
                w.return_spill(&counters.returned);
                on_evicted(now_ms, e);
            }
        }
    }
}
