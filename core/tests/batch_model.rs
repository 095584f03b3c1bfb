//! Cross-check: the real buffer, driven single-threaded through its non-blocking calls, makes
//! exactly the decisions of the sequential reference model (`tidemark_testkit::batch::ReferenceBatcher`).
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use tidemark::Offset;
use tidemark::batch::{Batch, BatchBuffer, BatchConfig, Clock, ManualClock, Poll};
use tidemark_testkit::batch::{RefPoll, RefReport, ReferenceBatcher};

#[derive(Clone, Debug)]
enum Op {
    Push(usize),
    Advance(u64),
    Poll,
    Ack(usize),
    Nack(usize, bool),
    Flush,
    BeginStop(u64),
    PollStop,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..40).prop_map(Op::Push),
        3 => (0u64..15).prop_map(Op::Advance),
        5 => Just(Op::Poll),
        3 => any::<usize>().prop_map(Op::Ack),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(k, r)| Op::Nack(k, r)),
        1 => Just(Op::Flush),
        1 => (0u64..40).prop_map(Op::BeginStop),
        1 => Just(Op::PollStop),
    ]
}

fn config() -> impl Strategy<Value = BatchConfig> {
    (
        1usize..6,
        1u64..64,
        0u64..30,
        0usize..10,
        0u64..100,
        1usize..4,
    )
        .prop_map(
            |(max_messages, max_bytes, linger, extra_n, extra_b, inflight)| {
                let mut c = BatchConfig::default();
                c.max_messages = max_messages;
                c.max_bytes = max_bytes;
                c.linger = Duration::from_millis(linger);
                c.capacity_messages = max_messages + extra_n;
                c.capacity_bytes = max_bytes + extra_b;
                c.max_inflight_batches = inflight;
                c
            },
        )
}

fn id_of(b: &Batch) -> Vec<u64> {
    b.iter().map(|m| m.offset.unwrap().tx).collect()
}

/// The payload of message `id`: its bytes name it, so a payload overwritten in the arena (or
/// copied from the wrong place) shows up as a mismatch, not only a wrong count.
fn payload_of(id: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (id as u8).wrapping_mul(31).wrapping_add(i as u8))
        .collect()
}

fn payload_ok(id: u64, payload: &[u8]) -> bool {
    payload == payload_of(id, payload.len()).as_slice()
}

fn run(config: BatchConfig, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let clock = Arc::new(ManualClock::new(Duration::from_secs(1)));
    let mut c = config.clone();
    c.clock = Some(clock.clone());
    let buffer = BatchBuffer::new(c).unwrap();
    let mut model = ReferenceBatcher::new(&config, clock.now());
    let mut out: Vec<Batch> = Vec::new();
    let mut next_id = 0u64;
    for op in ops {
        let now = clock.now();
        match op {
            Op::Push(len) => {
                let id = next_id;
                next_id += 1;
                let payload = payload_of(id, len);
                let offset = Some(Offset::new(id, 0));
                // Both push paths: owned (copied in, the Vec freed) and borrowed.
                let real = if id % 2 == 0 {
                    buffer.try_push(payload, offset).map_err(|e| e.reason)
                } else {
                    buffer.try_push_slice(&payload, offset)
                };
                prop_assert_eq!(real, model.push(id, len), "push {} of {} bytes", id, len);
            }
            Op::Advance(ms) => clock.advance(Duration::from_millis(ms)),
            Op::Poll => {
                let real = buffer.poll_batch(now);
                let want = model.poll(now);
                match (real, want) {
                    (Poll::Ready(b), RefPoll::Ready(n, ids, trigger)) => {
                        prop_assert_eq!((b.id().get(), id_of(&b), b.trigger()), (n, ids, trigger));
                        for m in b.iter() {
                            let id = m.offset.unwrap().tx;
                            prop_assert!(payload_ok(id, m.payload), "payload of {} corrupted", id);
                        }
                        prop_assert_eq!(b.payload_bytes().len() as u64, b.bytes());
                        out.push(b);
                    }
                    (Poll::Wait(a), RefPoll::Wait(b)) => prop_assert_eq!(a, b),
                    (Poll::Closed, RefPoll::Closed) => {}
                    (real, want) => prop_assert!(false, "poll: real {:?}, model {:?}", real, want),
                }
            }
            Op::Ack(k) | Op::Nack(k, _) if out.is_empty() => {
                let _ = k;
            }
            Op::Ack(k) => {
                let b = out.remove(k % out.len());
                let n = b.id().get();
                let real = buffer.ack(b).is_ok();
                prop_assert_eq!(real, model.ack(n, now), "ack {}", n);
            }
            Op::Nack(k, requeue) => {
                let b = out.remove(k % out.len());
                let n = b.id().get();
                let real = buffer.nack(b, requeue).is_ok();
                prop_assert_eq!(real, model.nack(n, requeue, now), "nack {}", n);
            }
            Op::Flush => prop_assert_eq!(buffer.flush(now), model.flush(now)),
            Op::BeginStop(grace) => {
                let deadline = now + Duration::from_millis(grace);
                buffer.begin_stop(deadline);
                model.begin_stop(deadline);
            }
            Op::PollStop => {
                let real = buffer.poll_stop(now).map(|r| RefReport::of(&r));
                prop_assert_eq!(real, model.poll_stop(now));
            }
        }
    }
    let now = clock.now();
    buffer.begin_stop(now);
    model.begin_stop(now);
    let real = buffer
        .poll_stop(now)
        .expect("a stop at its deadline finishes");
    let want = model.poll_stop(now).unwrap();
    prop_assert_eq!(RefReport::of(&real), want);
    for h in &real.handed_back {
        let id = h.message.offset.unwrap().tx;
        prop_assert!(
            payload_ok(id, &h.message.payload),
            "handed-back payload of {} corrupted",
            id
        );
    }
    prop_assert_eq!(
        real.accepted,
        real.delivered + real.failed + real.handed_back_count()
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn buffer_matches_the_reference_model(
        config in config(),
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        run(config, ops)?;
    }
}
