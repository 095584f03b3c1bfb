//! The sweeper and the observer's sampler.
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tidemark::Event;

use super::*;

/// Sweeps every `P` until told to stop; marks evictions for the observer.
pub(crate) fn sweeper(sh: &Shared) {
    let period = Duration::from_millis(sh.cfg.sweep_ms);
    let start = Instant::now();
    let mut tick = 0u32;
    let mut events = Vec::new();
    let counters = &sh.work[sh.work.len() - 1];
    while !sh.stop_background.load(Ordering::Relaxed) {
        tick += 1;
        let target = start + period * tick;
        let now = Instant::now();
        if target > now {
            std::thread::sleep(target - now);
        }
        let now_ms = sh.now_ms();
        let mut evicted = Vec::new();
        {
            let _gate = sh.gate.write().unwrap();
            let out = sh.tracker.sweep(now_ms);
            events.clear();
            sh.tracker.take_events(&mut events, usize::MAX);
            for e in &events {
                if let Event::Evicted(id, reason) = *e {
                    let w = &sh.writers[id.index() as usize];
                    // SeqCst: read by the sampler under the gate's read lock.
                    w.evicted.store(true, Ordering::SeqCst);
                    let before = w.mode.swap(mode::EVICTED, Ordering::Relaxed);
                    evicted.push((id.index(), reason, before));
                }
            }
            let mut log = sh.sweeps.lock().unwrap();
            log.sweeps += 1;
            log.challenges += out.challenged as u64;
            if let Some(last) = log.last_ms {
                log.max_gap_ms = log.max_gap_ms.max(now_ms.saturating_sub(last));
            }
            log.last_ms = Some(now_ms);
        }
        for (i, reason, before) in evicted {
            let w = &sh.writers[i as usize];
            // The host invalidates the evicted writer: its buffer hands everything back (a
            // killed writer's buffer was stopped, and counted, at the kill).
            let report = w.buffer.stop(sh.clock.now());
            if before != mode::KILLED {
                counters
                    .handed_back_mid
                    .fetch_add(report.handed_back_count(), Ordering::Relaxed);
            }
            sh.return_spill(w, counters);
            let fault = sh.fault_of.get(&i).map(|&k| {
                let mut f = sh.faults.lock().unwrap();
                f[k].evicted.get_or_insert((now_ms, reason));
                f[k].planned.kind
            });
            sh.evictions.lock().unwrap().push(Eviction {
                writer: i,
                reason,
                at_ms: now_ms,
                fault,
            });
        }
    }
}

/// One observer sample: the ack first, then the bound (see observer.rs).
pub(crate) fn sample(sh: &Shared, obs: &mut Observer) -> Sample {
    let (ack, bound) = {
        let _gate = sh.gate.read().unwrap();
        let ack = sh.tracker.ack();
        let new = std::mem::take(&mut *sh.deliveries.lock().unwrap());
        obs.record(new);
        let bound = obs.bound(
            |w| sh.writers[w as usize].proven.load(Ordering::SeqCst),
            |w| sh.writers[w as usize].evicted.load(Ordering::SeqCst),
        );
        (ack, bound)
    };
    let t_ms = sh.now_ms().saturating_sub(sh.start_ms);
    obs.check(t_ms, ack, bound);
    Sample {
        t_ms,
        last_tx: obs.last_tx(),
        ack,
        bound,
    }
}

/// Samples every [`SAMPLE_EVERY`] until told to stop; returns the observer and the samples.
pub(crate) fn sampler(sh: &Shared) -> (Observer, Vec<Sample>) {
    let mut obs = Observer::default();
    let mut samples = Vec::new();
    while !sh.stop_background.load(Ordering::Relaxed) {
        samples.push(sample(sh, &mut obs));
        std::thread::sleep(SAMPLE_EVERY);
    }
    samples.push(sample(sh, &mut obs));
    (obs, samples)
}
