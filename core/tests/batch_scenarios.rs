//! Scenario tests of the batch buffer (docs/CONTRACT.md §1 story 2, §5): the stories, drain
//! on stop and drop, exact triggers, linger as batch age, stops racing pushes.
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tidemark::batch::{AckError, BatchBuffer, Poll, PushRefusal, StopReport, TakeError, Trigger};

mod common;
use common::batch::*;

#[test]
fn lost_final_batch_story_is_delivered_on_stop() {
    let (c, clock) = with_clock(config(|c| {
        c.linger = HOUR;
        c.max_messages = 100_000;
        c.max_bytes = 1 << 30;
        c.capacity_messages = 100_000;
        c.capacity_bytes = 1 << 30;
    }));
    let buffer = Arc::new(BatchBuffer::new(c).unwrap());
    for i in 0..25 {
        buffer.try_push(id_msg(i), None).unwrap();
    }
    clock.advance(Duration::from_secs(60));
    // Nothing is emitted: linger is an hour, the limits are huge.
    assert!(
        matches!(buffer.poll_batch(buffer.now()), Poll::Wait(Some(d)) if d > Duration::from_secs(3000))
    );
    assert_eq!(
        buffer.next_batch(Duration::from_millis(10)).unwrap_err(),
        TakeError::Timeout
    );
    assert_eq!(
        buffer.stats().batches_by_linger + buffer.stats().in_flight_batches,
        0
    );

    let sink = spawn_acking_sink(buffer.clone());
    let report = buffer.stop(buffer.now() + Duration::from_secs(30));
    let delivered = sink.join().unwrap();
    assert_eq!(
        delivered,
        (0..25).collect::<Vec<_>>(),
        "all 25, once each, in order"
    );
    assert_eq!((report.accepted, report.delivered), (25, 25));
    assert!(report.handed_back.is_empty() && !report.timed_out);
    assert_eq!(buffer.stats().batches_by_stop, 1);
    assert_accounted(&report);
    // After the stop, pushes get their message back.
    let err = buffer.try_push(id_msg(99), None).unwrap_err();
    assert_eq!(err.reason, PushRefusal::Closed);
    assert_eq!(id_of(&err.message), 99);
}

#[test]
fn queue_resident_and_partial_batch_drain_on_stop() {
    let (c, _clock) = with_clock(config(|c| {
        c.linger = HOUR;
        c.max_messages = 4;
    }));
    let buffer = Arc::new(BatchBuffer::new(c).unwrap());
    for i in 0..6 {
        buffer.try_push(id_msg(i), None).unwrap();
    }
    // The sink looks: one full batch goes, two messages stay staged as a partial batch.
    let first = ready(buffer.poll_batch(buffer.now()));
    assert_eq!(ids(&first), vec![0, 1, 2, 3]);
    assert_eq!(first.trigger(), Trigger::Count);
    buffer.ack(first).unwrap();
    // Three more stay in the ring (the sink has not looked since).
    for i in 6..9 {
        buffer.try_push(id_msg(i), None).unwrap();
    }
    let sink = spawn_acking_sink(buffer.clone());
    let report = buffer.stop(buffer.now() + Duration::from_secs(30));
    assert_eq!(sink.join().unwrap(), (4..9).collect::<Vec<_>>());
    assert_eq!((report.accepted, report.delivered), (9, 9));
    assert_accounted(&report);
}

#[test]
fn drop_hands_back_staged_queued_and_in_flight_in_order() {
    let (c, _clock) = with_clock(config(|c| {
        c.linger = HOUR;
        c.max_messages = 4;
    }));
    let buffer = BatchBuffer::new(c).unwrap();
    let handle = buffer.drop_report();
    for i in 0..6 {
        buffer.try_push(id_msg(i), None).unwrap();
    }
    let in_flight = ready(buffer.poll_batch(buffer.now())); // 0..4 in flight, 4..6 staged
    for i in 6..9 {
        buffer.try_push(id_msg(i), None).unwrap(); // in the ring
    }
    assert!(handle.take().is_none());
    drop(buffer);
    let report = handle.take().expect("the dropped buffer's report");
    let back: Vec<(u64, bool)> = report
        .handed_back
        .iter()
        .map(|h| (id_of(&h.message), h.outcome_unknown))
        .collect();
    let expected: Vec<(u64, bool)> = (0..9).map(|i| (i, i < 4)).collect();
    assert_eq!(back, expected);
    assert_eq!(report.unknown_batches, vec![in_flight.id()]);
    assert_eq!(
        (report.accepted, report.delivered, report.in_flight_unknown),
        (9, 0, 4)
    );
    assert_accounted(&report);
    // The sink still has its batch; its messages were handed back, not lost.
    assert_eq!(ids(&in_flight), vec![0, 1, 2, 3]);
}

#[test]
fn drop_with_a_hand_back_sink_delivers_the_report_there() {
    let buffer = BatchBuffer::new(config(|c| c.linger = HOUR)).unwrap();
    let got: Arc<Mutex<Option<Arc<StopReport>>>> = Arc::default();
    let slot = got.clone();
    buffer.on_drop(move |r| *slot.lock().unwrap() = Some(r));
    buffer.try_push(id_msg(7), None).unwrap();
    drop(buffer);
    let report = got.lock().unwrap().take().expect("hand-back sink called");
    assert_eq!(report.handed_back.len(), 1);
    assert_eq!(id_of(&report.handed_back[0].message), 7);
    assert!(!report.handed_back[0].outcome_unknown);
}

#[test]
fn count_trigger_is_exact() {
    let (c, _clock) = with_clock(config(|c| {
        c.linger = HOUR;
        c.max_messages = 3;
        c.max_bytes = 1000;
    }));
    let buffer = BatchBuffer::new(c).unwrap();
    for i in 0..2 {
        buffer.try_push(id_msg(i), None).unwrap();
    }
    assert!(matches!(
        buffer.poll_batch(buffer.now()),
        Poll::Wait(Some(_))
    ));
    buffer.try_push(id_msg(2), None).unwrap();
    buffer.try_push(id_msg(3), None).unwrap();
    let b = ready(buffer.poll_batch(buffer.now()));
    assert_eq!((ids(&b), b.trigger()), (vec![0, 1, 2], Trigger::Count));
    assert!(matches!(
        buffer.poll_batch(buffer.now()),
        Poll::Wait(Some(_))
    ));
}

#[test]
fn byte_trigger_is_exact_and_an_oversize_message_goes_alone() {
    let (c, _clock) = with_clock(config(|c| {
        c.linger = HOUR;
        c.max_messages = 100;
        c.max_bytes = 30;
        c.max_inflight_batches = 10;
    }));
    let buffer = BatchBuffer::new(c).unwrap();
    let sizes = [10usize, 10, 9, 5, 100, 8, 30, 1];
    for (i, &len) in sizes.iter().enumerate() {
        let mut p = id_msg(i as u64);
        p.resize(len.max(8), 0xAB);
        if len < 8 {
            p.truncate(8);
        }
        buffer.try_push(p, None).unwrap();
    }
    // Payload lengths: 10, 10, 9, 8 (ids need 8 bytes), 100, 8, 30, 8.
    // 10+10+9 = 29, + 8 would be 37 > 30: batch [0,1,2] (next does not fit).
    // 8, then 100 does not fit: [3]. 100 alone (oversize): [4]. 8 + 30 > 30: [5].
    // 30 reaches max_bytes exactly: [6]. 8 waits (linger an hour).
    let expect = [vec![0, 1, 2], vec![3], vec![4], vec![5], vec![6]];
    for e in expect {
        let b = ready(buffer.poll_batch(buffer.now()));
        assert_eq!((ids(&b), b.trigger()), (e, Trigger::Bytes));
    }
    assert!(matches!(
        buffer.poll_batch(buffer.now()),
        Poll::Wait(Some(_))
    ));
}

#[test]
fn linger_is_batch_age_not_a_debounce_injected_clock() {
    let (c, clock) = with_clock(config(|c| {
        c.linger = Duration::from_millis(50);
        c.max_messages = 10_000;
    }));
    let buffer = BatchBuffer::new(c).unwrap();
    let mut emitted_at = Vec::new();
    let mut delivered = Vec::new();
    // One message every 5 ms for one second: a debounce would never fire.
    for i in 0..200u64 {
        clock.advance(Duration::from_millis(5));
        buffer.try_push(id_msg(i), None).unwrap();
        if let Poll::Ready(b) = buffer.poll_batch(buffer.now()) {
            assert_eq!(b.trigger(), Trigger::Linger);
            emitted_at.push(buffer.now());
            delivered.extend(ids(&b));
            buffer.ack(b).unwrap();
        }
    }
    assert!(emitted_at.len() >= 18, "batches at {emitted_at:?}");
    for w in emitted_at.windows(2) {
        let gap = w[1] - w[0];
        assert!(
            gap >= Duration::from_millis(45) && gap <= Duration::from_millis(55),
            "batches every ~50 ms, got a gap of {gap:?}"
        );
    }
    assert_eq!(delivered, (0..delivered.len() as u64).collect::<Vec<_>>());
}

#[test]
fn linger_is_batch_age_real_time() {
    let buffer = Arc::new(
        BatchBuffer::new(config(|c| {
            c.linger = Duration::from_millis(50);
            c.max_messages = 10_000;
        }))
        .unwrap(),
    );
    let sink = {
        let buffer = buffer.clone();
        thread::spawn(move || {
            let mut batches = Vec::new();
            while let Ok(b) = buffer.next_batch(Duration::from_secs(5)) {
                batches.push((Instant::now(), b.trigger(), b.len()));
                buffer.ack(b).unwrap();
            }
            batches
        })
    };
    let start = Instant::now();
    let mut pushed = 0u64;
    while start.elapsed() < Duration::from_millis(600) {
        buffer.try_push(id_msg(pushed), None).unwrap();
        pushed += 1;
        thread::sleep(Duration::from_millis(5));
    }
    let report = buffer.stop(buffer.now() + Duration::from_secs(5));
    let batches = sink.join().unwrap();
    assert_eq!(report.delivered, pushed);
    let by_linger = batches.iter().filter(|b| b.1 == Trigger::Linger).count();
    // ~12 linger batches in 600 ms; a debounce gives 0. Generous bounds for noisy 2-core CI.
    assert!(by_linger >= 4, "linger batches: {batches:?}");
    for w in batches.windows(2).filter(|w| w[1].1 == Trigger::Linger) {
        assert!(w[1].0 - w[0].0 < Duration::from_millis(400), "{batches:?}");
    }
}

#[test]
fn stuck_sink_stop_returns_near_deadline_and_hands_back_in_order() {
    let buffer = Arc::new(
        BatchBuffer::new(config(|c| {
            c.linger = HOUR;
            c.max_messages = 3;
            c.max_inflight_batches = 1;
        }))
        .unwrap(),
    );
    for i in 0..10 {
        buffer.try_push(id_msg(i), None).unwrap();
    }
    let stuck = buffer.next_batch(Duration::from_secs(1)).unwrap();
    assert_eq!(ids(&stuck), vec![0, 1, 2]);
    // The sink is wedged from here on: it never acks nor takes again.
    let grace = Duration::from_millis(300);
    let started = Instant::now();
    let report = buffer.stop(buffer.now() + grace);
    let took = started.elapsed();
    assert!(took >= grace, "returned before the deadline: {took:?}");
    assert!(
        took < grace + Duration::from_secs(2),
        "returned long after the deadline: {took:?}"
    );
    assert!(report.timed_out);
    assert_eq!(report.unknown_batches, vec![stuck.id()]);
    assert_eq!(report.in_flight_unknown, 3);
    let back: Vec<(u64, bool)> = report
        .handed_back
        .iter()
        .map(|h| (id_of(&h.message), h.outcome_unknown))
        .collect();
    assert_eq!(back, (0..10).map(|i| (i, i < 3)).collect::<Vec<_>>());
    assert_accounted(&report);
    // A late ack is refused and changes nothing.
    assert!(matches!(buffer.ack(stuck), Err(AckError::NotInFlight(_))));
    assert_eq!(buffer.stats().late_acks, 1);
    assert_eq!(*buffer.stop(buffer.now()), *report);
}

#[test]
fn concurrent_stops_return_the_same_report() {
    let buffer = Arc::new(BatchBuffer::new(config(|c| c.linger = HOUR)).unwrap());
    for i in 0..5 {
        buffer.try_push(id_msg(i), None).unwrap();
    }
    let stoppers: Vec<_> = (0..3)
        .map(|k| {
            let buffer = buffer.clone();
            thread::spawn(move || buffer.stop(buffer.now() + Duration::from_millis(50 * k)))
        })
        .collect();
    let reports: Vec<Arc<StopReport>> = stoppers.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(reports.iter().all(|r| Arc::ptr_eq(r, &reports[0])));
    assert_eq!(reports[0].handed_back.len(), 5);
}

#[test]
fn pushes_racing_stop_are_accepted_and_accounted_or_handed_back() {
    for round in 0..20u64 {
        let buffer = Arc::new(
            BatchBuffer::new(config(|c| {
                c.linger = Duration::from_millis(1);
                c.max_messages = 16;
                c.capacity_messages = 1024;
            }))
            .unwrap(),
        );
        let sink = spawn_acking_sink(buffer.clone());
        let producers: Vec<_> = (0..3u64)
            .map(|p| {
                let buffer = buffer.clone();
                thread::spawn(move || {
                    let (mut accepted, mut refused) = (Vec::new(), 0);
                    for i in 0.. {
                        let id = p << 32 | i;
                        match buffer.try_push(id_msg(id), None) {
                            Ok(()) => accepted.push(id),
                            Err(e) => {
                                assert_eq!(id_of(&e.message), id, "the message comes back");
                                match e.reason {
                                    PushRefusal::Full => thread::yield_now(),
                                    PushRefusal::Stopping | PushRefusal::Closed => {
                                        refused += 1;
                                        if refused > 3 {
                                            return accepted;
                                        }
                                    }
                                    r => panic!("unexpected refusal {r:?}"),
                                }
                            }
                        }
                    }
                    unreachable!()
                })
            })
            .collect();
        thread::sleep(Duration::from_micros(200 * (round % 5)));
        let report = buffer.stop(buffer.now() + Duration::from_secs(10));
        let mut accepted: Vec<u64> = producers
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        let delivered = sink.join().unwrap();
        let mut ended: Vec<u64> = delivered.clone();
        ended.extend(report.handed_back.iter().map(|h| id_of(&h.message)));
        accepted.sort_unstable();
        ended.sort_unstable();
        assert_eq!(
            ended, accepted,
            "accepted == delivered ∪ handed back, each once"
        );
        assert_eq!(report.accepted, accepted.len() as u64);
        assert_accounted(&report);
        // Per-producer order in delivery (one sink, acks in order).
        for p in 0..3u64 {
            let mine: Vec<u64> = delivered
                .iter()
                .copied()
                .filter(|id| id >> 32 == p)
                .collect();
            assert!(mine.windows(2).all(|w| w[0] < w[1]));
        }
    }
}
