//! Scenario tests of the batch buffer (docs/CONTRACT.md §5): capacity bounds, blocking pushes,
//! nack and flush, configuration errors, the tracker link, idle memory and the byte arena.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use tidemark::Offset;
use tidemark::batch::{
    AckError, BatchBuffer, BatchConfig, Clock, ConfigError, FlushError, FlushLink, LinkError,
    Message, Poll, PushRefusal, Trigger,
};

mod common;
use common::batch::*;

#[test]
fn memory_stays_within_both_capacities_while_the_sink_is_paused() {
    let buffer = Arc::new(
        BatchBuffer::new(config(|c| {
            c.linger = HOUR;
            c.max_messages = 10;
            c.max_bytes = 1000;
            c.capacity_messages = 100;
            c.capacity_bytes = 2000;
        }))
        .unwrap(),
    );
    // Messages of 30 bytes: the byte capacity (66 messages) binds before the count (100).
    let producers: Vec<_> = (0..2u64)
        .map(|p| {
            let buffer = buffer.clone();
            thread::spawn(move || {
                let mut n = 0u64;
                for i in 0..1000 {
                    let mut m = id_msg(p << 32 | i);
                    m.resize(30, 0);
                    match buffer.try_push(m, None) {
                        Ok(()) => n += 1,
                        Err(e) => assert_eq!(e.reason, PushRefusal::Full),
                    }
                    let s = buffer.stats();
                    assert!(s.queued_messages <= 100 && s.queued_bytes <= 2000, "{s:?}");
                }
                n
            })
        })
        .collect();
    let accepted: u64 = producers.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(accepted, 2000 / 30);
    let s = buffer.stats();
    assert_eq!((s.queued_messages, s.queued_bytes), (66, 66 * 30));
    assert_eq!(s.rejected_full, 2000 - 66);
    // In-flight batches still count against the capacity until they are acked.
    let b = buffer.next_batch(Duration::from_secs(1)).unwrap();
    assert!(buffer.try_push(vec![0; 30], None).is_err());
    // A blocked push_timeout gives up with its message ...
    let e = buffer
        .push_timeout(vec![1; 30], None, Duration::from_millis(30))
        .unwrap_err();
    assert_eq!((e.reason, e.message.payload.len()), (PushRefusal::Full, 30));
    // ... and succeeds once an ack frees room.
    let waiter = {
        let buffer = buffer.clone();
        thread::spawn(move || buffer.push_timeout(vec![2; 30], None, Duration::from_secs(10)))
    };
    thread::sleep(Duration::from_millis(20));
    buffer.ack(b).unwrap();
    waiter.join().unwrap().unwrap();
    // A message larger than the byte capacity can never fit.
    let e = buffer.try_push(vec![0; 2001], None).unwrap_err();
    assert_eq!(e.reason, PushRefusal::TooLarge);
}

#[test]
fn push_timeout_waiter_is_released_by_stop() {
    let buffer = Arc::new(
        BatchBuffer::new(config(|c| {
            c.linger = HOUR;
            c.max_messages = 1;
            c.capacity_messages = 1;
        }))
        .unwrap(),
    );
    buffer.try_push(id_msg(0), None).unwrap();
    let waiter = {
        let buffer = buffer.clone();
        thread::spawn(move || buffer.push_timeout(id_msg(1), None, Duration::from_secs(30)))
    };
    thread::sleep(Duration::from_millis(20));
    let report = buffer.stop(buffer.now());
    let e = waiter.join().unwrap().unwrap_err();
    // Released by the stop, not by its 30 s timeout: a timed-out push is refused as `Full`.
    assert!(matches!(
        e.reason,
        PushRefusal::Stopping | PushRefusal::Closed
    ));
    assert_eq!(id_of(&e.message), 1);
    assert_eq!(report.handed_back.len(), 1);
}

#[test]
fn push_many_accepts_the_prefix_that_fits() {
    let buffer = BatchBuffer::new(config(|c| {
        c.linger = HOUR;
        c.max_messages = 4;
        c.capacity_messages = 5;
    }))
    .unwrap();
    let batch: Vec<Message> = (0..8).map(|i| Message::new(id_msg(i))).collect();
    let e = buffer.push_many(batch).unwrap_err();
    assert_eq!((e.accepted, e.reason), (5, PushRefusal::Full));
    assert_eq!(e.rest.iter().map(id_of).collect::<Vec<_>>(), vec![5, 6, 7]);
    let b = ready(buffer.poll_batch(buffer.now()));
    assert_eq!(ids(&b), vec![0, 1, 2, 3]);
    assert_eq!(buffer.stats().rejected_full, 3);
}

#[test]
fn nack_requeue_comes_back_first_in_order_and_nack_fail_is_terminal() {
    let (c, clock) = with_clock(config(|c| {
        c.linger = Duration::from_millis(10);
        c.max_messages = 2;
        c.max_inflight_batches = 3;
    }));
    let buffer = BatchBuffer::new(c).unwrap();
    for i in 0..6 {
        buffer.try_push(id_msg(i), None).unwrap();
    }
    let b0 = ready(buffer.poll_batch(clock.now()));
    let b1 = ready(buffer.poll_batch(clock.now()));
    buffer.try_push(id_msg(6), None).unwrap();
    buffer.nack(b1, true).unwrap();
    buffer.nack(b0, true).unwrap();
    let again = ready(buffer.poll_batch(clock.now()));
    assert_eq!(ids(&again), vec![0, 1]);
    let again2 = ready(buffer.poll_batch(clock.now()));
    assert_eq!(ids(&again2), vec![2, 3]);
    buffer.nack(again, false).unwrap();
    buffer.ack(again2).unwrap();
    let report = buffer.stop(clock.now());
    assert_eq!((report.delivered, report.failed), (2, 2));
    let back: Vec<u64> = report
        .handed_back
        .iter()
        .map(|h| id_of(&h.message))
        .collect();
    assert_eq!(back, vec![4, 5, 6]);
    assert_eq!(buffer.stats().requeued, 4);
    assert_accounted(&report);
}

#[test]
fn flush_emits_what_is_buffered_ignoring_linger() {
    let buffer = Arc::new(BatchBuffer::new(config(|c| c.linger = HOUR)).unwrap());
    for i in 0..3 {
        buffer.try_push(id_msg(i), None).unwrap();
    }
    let sink = spawn_acking_sink(buffer.clone());
    buffer
        .flush(buffer.now() + Duration::from_secs(10))
        .unwrap();
    assert_eq!(buffer.stats().delivered, 3);
    assert_eq!(buffer.stats().batches_by_flush, 1);
    buffer.try_push(id_msg(3), None).unwrap();
    let report = buffer.stop(buffer.now() + Duration::from_secs(10));
    assert_eq!(sink.join().unwrap(), vec![0, 1, 2, 3]);
    assert_eq!(report.delivered, 4);
    assert_eq!(buffer.flush(buffer.now()), Err(FlushError::Closed));
}

#[test]
fn flush_times_out_without_a_sink() {
    let buffer = BatchBuffer::new(config(|c| c.linger = HOUR)).unwrap();
    buffer.try_push(id_msg(0), None).unwrap();
    let deadline = buffer.now() + Duration::from_millis(50);
    let r = buffer.flush(deadline);
    assert_eq!(r, Err(FlushError::Timeout));
    // Timeout means the deadline passed on the buffer's own monotonic clock (not a duration bound).
    assert!(
        buffer.now() >= deadline,
        "flush reported Timeout before its deadline"
    );
    // It marked the message due: the sink gets it without waiting for linger.
    let b = ready(buffer.poll_batch(buffer.now()));
    assert_eq!(b.trigger(), Trigger::Flush);
}

#[test]
fn invalid_configs_are_rejected() {
    let cases: Vec<(BatchConfig, ConfigError)> = vec![
        (
            config(|c| c.max_messages = 0),
            ConfigError::Zero {
                field: "max_messages",
            },
        ),
        (
            config(|c| c.max_bytes = 0),
            ConfigError::Zero { field: "max_bytes" },
        ),
        (
            config(|c| c.max_inflight_batches = 0),
            ConfigError::Zero {
                field: "max_inflight_batches",
            },
        ),
        (
            config(|c| c.capacity_messages = 10),
            ConfigError::CapacityBelowBatch {
                capacity: "capacity_messages",
                batch: "max_messages",
            },
        ),
        (
            config(|c| c.capacity_bytes = 10),
            ConfigError::CapacityBelowBatch {
                capacity: "capacity_bytes",
                batch: "max_bytes",
            },
        ),
        (
            config(|c| c.capacity_messages = (1 << 22) + 1),
            ConfigError::TooLarge {
                field: "capacity_messages",
                max: 1 << 22,
            },
        ),
        (
            config(|c| c.capacity_bytes = 1 << 40),
            ConfigError::TooLarge {
                field: "capacity_bytes",
                max: (1 << 35) - 1,
            },
        ),
    ];
    for (c, e) in cases {
        assert_eq!(BatchBuffer::new(c).unwrap_err(), e);
    }
}

#[derive(Debug, Default)]
struct RecordingLink {
    reports: Mutex<Vec<(Offset, u64)>>,
    fail: AtomicBool,
}

impl FlushLink for RecordingLink {
    fn flushed(&self, offset: Offset, now_ms: u64) -> Result<(), LinkError> {
        if self.fail.load(Ordering::Relaxed) {
            return Err(LinkError("tracker says no".into()));
        }
        self.reports.lock().unwrap().push((offset, now_ms));
        Ok(())
    }
}

#[test]
fn acks_report_only_the_contiguous_acked_prefix_to_the_link() {
    let link = Arc::new(RecordingLink::default());
    let (mut c, clock) = with_clock(config(|c| {
        c.linger = HOUR;
        c.max_messages = 2;
        c.max_inflight_batches = 3;
    }));
    c.flush_link = Some(link.clone());
    let buffer = BatchBuffer::new(c).unwrap();
    for tx in 1..=6u64 {
        buffer
            .try_push(id_msg(tx), Some(Offset::new(tx, 0)))
            .unwrap();
    }
    clock.set(Duration::from_millis(1234));
    let b0 = ready(buffer.poll_batch(clock.now()));
    let b1 = ready(buffer.poll_batch(clock.now()));
    let b2 = ready(buffer.poll_batch(clock.now()));
    assert_eq!(b1.highest_offset(), Some(Offset::new(4, 0)));
    // Out of order: acking b1 first must not report 4 while b0 (1, 2) is unresolved.
    buffer.ack(b1).unwrap();
    assert!(link.reports.lock().unwrap().is_empty());
    buffer.ack(b0).unwrap();
    assert_eq!(
        *link.reports.lock().unwrap(),
        vec![(Offset::new(4, 0), 1234)]
    );
    // A link failure surfaces, but the batch is delivered all the same.
    link.fail.store(true, Ordering::Relaxed);
    assert!(matches!(buffer.ack(b2), Err(AckError::Link(_))));
    let s = buffer.stats();
    assert_eq!((s.delivered, s.link_errors), (6, 1));
    let report = buffer.stop(clock.now());
    assert_eq!(report.delivered, 6);
}

#[test]
fn acking_batches_moves_the_tracker_ack_through_the_link() {
    use tidemark::batch::TrackerLink;
    use tidemark::{Tracker, TrackerError, TrackerOptions, WriterId};

    let tracker = Arc::new(Tracker::new(TrackerOptions::default()).unwrap());
    let writer = tracker.register().unwrap();
    for tx in 1..=4 {
        tracker.commit(Offset::new(tx, 0), &[writer], 0).unwrap();
    }
    let (mut c, clock) = with_clock(config(|c| {
        c.linger = HOUR;
        c.max_messages = 2;
    }));
    c.flush_link = Some(Arc::new(TrackerLink::new(tracker.clone(), writer)));
    let buffer = BatchBuffer::new(c).unwrap();
    for tx in 1..=4 {
        buffer
            .try_push(id_msg(tx), Some(Offset::new(tx, 0)))
            .unwrap();
    }
    clock.set(Duration::from_millis(5_000));
    let b0 = ready(buffer.poll_batch(clock.now()));
    let b1 = ready(buffer.poll_batch(clock.now()));
    assert_eq!(tracker.ack(), Some(0), "nothing flushed: commit 1 pins it");
    buffer.ack(b0).unwrap();
    assert_eq!(
        tracker.ack(),
        Some(2),
        "commits 1 and 2 flushed; 3 still owed"
    );
    buffer.ack(b1).unwrap();
    assert_eq!(tracker.ack(), Some(4));

    // A tracker error is surfaced, counted, and the batch is delivered all the same.
    let bogus = WriterId::from_raw(u64::MAX);
    let mut c = config(|c| c.linger = HOUR);
    c.flush_link = Some(Arc::new(TrackerLink::new(tracker.clone(), bogus)));
    let buffer = BatchBuffer::new(c).unwrap();
    buffer.try_push(id_msg(9), Some(Offset::new(9, 0))).unwrap();
    buffer.flush(buffer.now()).unwrap_err();
    let b = ready(buffer.poll_batch(buffer.now()));
    match buffer.ack(b) {
        Err(AckError::Link(e)) => {
            assert!(matches!(
                e.tracker_error(),
                Some(TrackerError::UnknownWriter(_))
            ))
        }
        other => panic!("expected a link error, got {other:?}"),
    }
    let s = buffer.stats();
    assert_eq!((s.delivered, s.link_errors), (1, 1));
}

/// A buffer nobody pushed to holds no ring and no arena: only its fixed struct (the issue's
/// bound for an idle 16-message buffer is 2 KiB), and the first push allocates them.
#[test]
fn an_idle_buffer_allocates_no_ring_or_arena() {
    let b = BatchBuffer::new(config(|c| {
        c.max_messages = 16;
        c.capacity_messages = 16;
        c.max_bytes = 16 * 64;
        c.capacity_bytes = 16 * 64;
    }))
    .unwrap();
    let idle = b.memory_bytes();
    assert!(idle <= 2048, "idle buffer: {idle} bytes");
    b.try_push_slice(b"x", None).unwrap();
    assert!(
        b.memory_bytes() >= idle + 16 * 64,
        "the first push allocates the arena"
    );
}

/// Payloads that wrap around the arena's end, of mixed sizes, with batches acked out of order,
/// come out intact; a message the buffer can never hold is refused as `TooLarge` with nothing
/// reserved, and one that would fit later is refused as `Full`.
#[test]
fn arena_wrap_around_fragmentation_and_oversize() {
    let b = BatchBuffer::new(config(|c| {
        c.max_messages = 3;
        c.capacity_messages = 6;
        c.max_bytes = 40;
        c.capacity_bytes = 40; // a 64-byte arena
        c.max_inflight_batches = 3;
        c.linger = Duration::ZERO;
    }))
    .unwrap();
    let payload = |id: u64| -> Vec<u8> {
        let len = 1 + (id * 7 % 13) as usize;
        (0..len)
            .map(|i| (id as u8) ^ (i as u8).wrapping_mul(17))
            .collect()
    };
    let mut next = 0u64;
    let mut held: Vec<tidemark::batch::Batch> = Vec::new();
    let mut delivered = 0u64;
    for round in 0..200u64 {
        // Fill until refused; every refusal is Full (nothing here exceeds the capacity).
        loop {
            let p = payload(next);
            match b.try_push_slice(&p, Some(Offset::new(next, 0))) {
                Ok(()) => next += 1,
                Err(r) => {
                    assert_eq!(r, PushRefusal::Full);
                    break;
                }
            }
        }
        assert_eq!(
            b.try_push_slice(&[0; 41], None),
            Err(PushRefusal::TooLarge),
            "larger than capacity_bytes"
        );
        while let Poll::Ready(batch) = b.poll_batch(b.now()) {
            for m in batch.iter() {
                let id = m.offset.unwrap().tx;
                assert_eq!(
                    m.payload,
                    payload(id).as_slice(),
                    "message {id} in round {round}"
                );
            }
            held.push(batch);
        }
        // Ack out of order: the newest first, every other round the oldest stays out longer.
        let keep = usize::from(round % 2 == 0 && held.len() > 1);
        while held.len() > keep {
            let batch = held.pop().unwrap();
            delivered += batch.len() as u64;
            b.ack(batch).unwrap();
        }
    }
    for batch in held {
        delivered += batch.len() as u64;
        b.ack(batch).unwrap();
    }
    let report = b.stop(b.now());
    assert_eq!(report.accepted, next);
    assert_eq!(report.delivered, delivered);
    assert!(report.handed_back.is_empty());
    assert!(next > 64, "the arena wrapped many times ({next} messages)");
    let stats = b.stats();
    assert!(stats.rejected_too_large >= 200);
}
