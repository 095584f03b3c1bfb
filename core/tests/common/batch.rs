//! Helpers shared by the batch buffer's scenario test files.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use tidemark::batch::{
    BatchBuffer, BatchConfig, ManualClock, Message, Poll, StopReport, TakeError,
};

pub const HOUR: Duration = Duration::from_secs(3600);

pub fn config(f: impl FnOnce(&mut BatchConfig)) -> BatchConfig {
    let mut c = BatchConfig::default();
    f(&mut c);
    c
}

pub fn with_clock(mut c: BatchConfig) -> (BatchConfig, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(Duration::ZERO));
    c.clock = Some(clock.clone());
    (c, clock)
}

pub fn id_msg(id: u64) -> Vec<u8> {
    id.to_le_bytes().to_vec()
}

pub fn id_of(m: &Message) -> u64 {
    u64::from_le_bytes(m.payload[..8].try_into().unwrap())
}

pub fn ids(batch: &tidemark::batch::Batch) -> Vec<u64> {
    batch.messages().iter().map(id_of).collect()
}

pub fn ready(p: Poll) -> tidemark::batch::Batch {
    match p {
        Poll::Ready(b) => b,
        other => panic!("expected a batch, got {other:?}"),
    }
}

/// A sink thread that acks everything and records the ids it delivered, in order.
pub fn spawn_acking_sink(buffer: Arc<BatchBuffer>) -> thread::JoinHandle<Vec<u64>> {
    thread::spawn(move || {
        let mut seen = Vec::new();
        loop {
            match buffer.next_batch(Duration::from_millis(20)) {
                Ok(b) => {
                    seen.extend(ids(&b));
                    buffer.ack(b).unwrap();
                }
                Err(TakeError::Timeout) => {}
                Err(TakeError::Closed) => return seen,
            }
        }
    })
}

pub fn assert_accounted(r: &StopReport) {
    assert_eq!(
        r.accepted,
        r.delivered + r.failed + r.handed_back_count(),
        "every accepted message has exactly one terminal state: {r:?}"
    );
}
