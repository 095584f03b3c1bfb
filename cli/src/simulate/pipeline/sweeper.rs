//! The sweeper and the observer's sampler.
use std::sync::atomic::Ordering;

use crate::pipeline_common::sweep::Sweeper;

use super::*;

/// Sweeps every `P` until told to stop; marks evictions for the observer.
pub(crate) fn sweeper(sh: &Shared) {
    let sweeper = Sweeper {
        tracker: &sh.tracker,
        host: &sh.host,
        killed_counted: true,
    };
    // The sweeper invalidates each evicted writer: its buffer hands everything back (a killed
    // writer's buffer was stopped, and counted, at the kill).
    sweeper.run(
        || {},
        |now_ms, e| {
            let fault = sh.fault_of.get(&e.writer).map(|&k| {
                let mut f = sh.faults.lock().unwrap();
                f[k].evicted.get_or_insert((now_ms, e.reason));
                f[k].planned.kind
            });
            sh.evictions.lock().unwrap().push(Eviction {
                writer: e.writer,
                reason: e.reason,
                at_ms: now_ms,
                fault,
            });
        },
    );
}

/// One observer sample: the ack first, then the bound (see observer.rs).
pub(crate) fn sample(sh: &Shared, obs: &mut Observer) -> Sample {
    let (ack, bound) = {
        let _gate = sh.host.gate.read().unwrap();
        let ack = sh.tracker.ack();
        let new = std::mem::take(&mut *sh.deliveries.lock().unwrap());
        obs.record(new);
        let bound = obs.bound(
            |w| sh.host.writers[w as usize].proven.load(Ordering::SeqCst),
            |w| sh.host.writers[w as usize].evicted.load(Ordering::SeqCst),
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
    while !sh.host.stop_background.load(Ordering::Relaxed) {
        samples.push(sample(sh, &mut obs));
        std::thread::sleep(SAMPLE_EVERY);
    }
    samples.push(sample(sh, &mut obs));
    (obs, samples)
}
