//! Batch buffer paths through the ring's unsafe code, small enough for miri
//! (`scripts/miri.sh`): laps and wrap-around of tiny rings, requeues, a stop that leaves
//! messages in the ring (dropped with it), and concurrent producers on a two-slot ring. They
//! also run under plain `cargo test`; sizes shrink under `cfg(miri)` only (the interpreter is
//! about a thousand times slower).
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use tidemark::Offset;
use tidemark::batch::{BatchBuffer, BatchConfig, Clock, ManualClock, Poll, PushRefusal};

/// Laps of the ring per test.
const LAPS: u64 = if cfg!(miri) { 12 } else { 2_000 };

fn config(capacity: usize, max_messages: usize) -> (BatchConfig, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(Duration::from_secs(1)));
    let mut c = BatchConfig::default();
    c.max_messages = max_messages;
    c.max_bytes = 1 << 10;
    c.linger = Duration::ZERO;
    c.capacity_messages = capacity;
    c.capacity_bytes = 1 << 12;
    c.max_inflight_batches = 2;
    c.clock = Some(clock.clone());
    (c, clock)
}

fn payload(id: u64) -> Vec<u8> {
    id.to_le_bytes()[..(id % 8) as usize + 1].to_vec()
}

#[test]
fn tiny_ring_laps_and_wraps_in_order() {
    // capacity 3 → a 4-slot ring; batches of 2, so takes and pushes straddle the wrap point.
    let (c, clock) = config(3, 2);
    let buffer = BatchBuffer::new(c).unwrap();
    let (mut next, mut expect) = (0u64, 0u64);
    for _ in 0..LAPS {
        while buffer
            .try_push(payload(next), Some(Offset::new(next, 0)))
            .is_ok()
        {
            next += 1;
        }
        let now = clock.now();
        while let Poll::Ready(b) = buffer.poll_batch(now) {
            for m in b.messages() {
                assert_eq!(m.offset, Some(Offset::new(expect, 0)));
                assert_eq!(m.payload, payload(expect));
                expect += 1;
            }
            buffer.ack(b).unwrap();
        }
    }
    assert_eq!(expect, next);
    assert!(next >= 3 * LAPS);
    let report = buffer.stop(clock.now());
    assert_eq!(report.delivered, next);
    assert_eq!(report.handed_back_count(), 0);
}

#[test]
fn requeued_batches_come_back_first_across_laps() {
    let (c, clock) = config(2, 2);
    let buffer = BatchBuffer::new(c).unwrap();
    let mut next = 0u64;
    for lap in 0..LAPS {
        for _ in 0..2 {
            buffer
                .try_push(payload(next), Some(Offset::new(next, 0)))
                .unwrap();
            next += 1;
        }
        let now = clock.now();
        let Poll::Ready(b) = buffer.poll_batch(now) else {
            panic!("a full batch is due")
        };
        let ids: Vec<u64> = b.messages().iter().map(|m| m.offset.unwrap().tx).collect();
        if lap % 2 == 0 {
            // Back ahead of newer messages; the ring is full, so a push is refused meanwhile.
            buffer.nack(b, true).unwrap();
            let refused = buffer.try_push(vec![1], None).unwrap_err();
            assert_eq!(refused.reason, PushRefusal::Full);
            let Poll::Ready(again) = buffer.poll_batch(now) else {
                panic!("requeued")
            };
            let again_ids: Vec<u64> = again
                .messages()
                .iter()
                .map(|m| m.offset.unwrap().tx)
                .collect();
            assert_eq!(again_ids, ids);
            buffer.ack(again).unwrap();
        } else {
            buffer.ack(b).unwrap();
        }
    }
    let report = buffer.stop(clock.now());
    assert_eq!(report.delivered, next);
}

#[test]
fn a_stop_hands_back_what_is_still_in_the_ring() {
    let (c, clock) = config(5, 2);
    let buffer = BatchBuffer::new(c).unwrap();
    for id in 0..5u64 {
        buffer
            .try_push(payload(id), Some(Offset::new(id, 0)))
            .unwrap();
    }
    // One batch in flight (outcome unknown at the deadline), three never taken.
    let Poll::Ready(b) = buffer.poll_batch(clock.now()) else {
        panic!("due")
    };
    let report = buffer.stop(clock.now());
    assert_eq!(report.accepted, 5);
    assert_eq!(report.handed_back_count(), 5);
    assert!(buffer.ack(b).is_err(), "handed back already");
    let ids: Vec<u64> = report
        .handed_back
        .iter()
        .map(|h| h.message.offset.unwrap().tx)
        .collect();
    assert_eq!(ids.len(), 5);
    for h in &report.handed_back {
        let id = h.message.offset.unwrap().tx;
        assert_eq!(h.message.payload, payload(id));
    }
}

#[test]
fn dropping_a_running_buffer_drops_its_messages_once() {
    // Published, unconsumed values in the ring are dropped with it (no leak, no double drop:
    // miri checks both).
    let (c, _clock) = config(4, 4);
    let buffer = BatchBuffer::new(c).unwrap();
    for id in 0..3u64 {
        buffer.try_push(vec![id as u8; 16], None).unwrap();
    }
    drop(buffer);
}

#[test]
fn concurrent_producers_on_a_two_slot_ring() {
    // Three producers race for a 2-slot ring while the sink drains it: every message arrives
    // exactly once, in each producer's order.
    let per_producer: u64 = if cfg!(miri) { 6 } else { 2_000 };
    let (mut c, _clock) = config(2, 2);
    c.clock = None; // real time: the sink waits with a timeout
    let buffer = Arc::new(BatchBuffer::new(c).unwrap());
    let producers: Vec<_> = (0..3u64)
        .map(|p| {
            let buffer = Arc::clone(&buffer);
            thread::spawn(move || {
                for i in 0..per_producer {
                    let offset = Offset::new(p, i);
                    let mut payload = vec![p as u8, i as u8];
                    loop {
                        match buffer.try_push(payload, Some(offset)) {
                            Ok(()) => break,
                            Err(e) => {
                                assert_eq!(e.reason, PushRefusal::Full);
                                payload = e.message.payload;
                                thread::yield_now();
                            }
                        }
                    }
                }
            })
        })
        .collect();
    let mut last = [None::<u64>; 3];
    let mut got = 0;
    while got < 3 * per_producer {
        match buffer.next_batch(Duration::from_millis(50)) {
            Ok(b) => {
                for m in b.messages() {
                    let o = m.offset.unwrap();
                    assert_eq!(m.payload, vec![o.tx as u8, o.op as u8]);
                    let slot = &mut last[o.tx as usize];
                    assert!(slot.is_none_or(|l| o.op == l + 1), "producer order");
                    *slot = Some(o.op);
                    got += 1;
                }
                buffer.ack(b).unwrap();
            }
            Err(_) => thread::yield_now(),
        }
    }
    for p in producers {
        p.join().unwrap();
    }
    let report = buffer.stop(buffer.now());
    assert_eq!(report.delivered, 3 * per_producer);
    assert_eq!(report.handed_back_count(), 0);
}
