//! The sampler: every 100 ms it reads the slot from the server (retained WAL, confirmed and
//! restart positions) and checks the confirmed position against the observer's bound (see
//! observer.rs for why reading the server first and the facts after is sound).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;
use tokio_postgres::Client;

use super::observer::Observer;
use super::pipeline::Shared;
use super::sql;

/// Sampling period.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// One reading.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Sample {
    /// Ms since the start.
    pub t_ms: u64,
    /// The slot as the server reported it.
    pub slot: sql::SlotReading,
    /// The newest streamed commit's end LSN when the facts were read.
    pub newest_end: Option<u64>,
    /// The flush position the acker had handed out.
    pub target: u64,
    /// The observer's bound (None: every delivery done).
    pub bound: Option<u64>,
}

/// Samples until `stop` turns true; returns the observer. Readings go to `sh.samples`.
pub(crate) async fn run(
    sh: Arc<Shared>,
    client: Client,
    mut stop: watch::Receiver<bool>,
) -> Result<Observer, String> {
    let st = sql::prepare_reading(&client).await?;
    let mut obs = Observer::default();
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => {}
        }
        let last = *stop.borrow();
        match sql::read_slot(&client, &st, &sh.cfg.slot).await {
            Ok(slot) => {
                failures = 0;
                let sample = check(&sh, &mut obs, slot);
                sh.samples.lock().unwrap().push(sample);
            }
            Err(e) => {
                failures += 1;
                if failures >= 20 {
                    return Err(format!("sampler: {e}"));
                }
            }
        }
        if last {
            return Ok(obs);
        }
    }
}

/// The facts after the reading, under the gate's read lock.
fn check(sh: &Shared, obs: &mut Observer, slot: sql::SlotReading) -> Sample {
    let (bound, newest_end, target) = {
        let _gate = sh.host.gate.read().unwrap();
        let new = std::mem::take(&mut *sh.deliveries.lock().unwrap());
        obs.record(new);
        let bound = obs.bound(
            |w| sh.host.writers[w as usize].proven.load(Ordering::SeqCst),
            |w| sh.host.writers[w as usize].evicted.load(Ordering::SeqCst),
        );
        let newest = sh.newest.lock().unwrap().map(|(_, end)| end);
        (bound, newest, sh.confirm.load(Ordering::Relaxed))
    };
    let t_ms = sh.rel_ms();
    obs.check(t_ms, slot.confirmed, bound);
    Sample {
        t_ms,
        slot,
        newest_end,
        target,
        bound,
    }
}
