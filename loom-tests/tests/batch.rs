//! loom models of the batch buffer's protocols: admission closing (push vs stop), two producers
//! sharing the reservation word, the ring's lap boundary (a producer publishing into a slot and
//! arena bytes the consumer is freeing), ack/nack vs stop, and the sink's two ways to wait for
//! a push: parked in `next_batch` (a real condition-variable wait) and armed by
//! `poll_batch_notify`.
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test -p loom-tests --release --test batch`.
//!
//! Capacities are shrunk to 2 messages (a ring of 2 slots, the smallest with two distinct stamp
//! states per slot): every message is one CAS on the state word, one ticket, two stamp accesses
//! and a sink-mutex round, so each extra message multiplies the interleavings loom explores;
//! two slots are enough to reach the wrap-around, where slot reuse depends on edge R2 and arena
//! reuse on edge R3. Under loom a timed condition-variable wait waits for a notification only,
//! so a lost wake-up of the parked sink fails the model as a deadlock.
#![cfg(tidemark_loom)]

use std::sync::Arc as StdArc;
use std::time::Duration;

use loom::sync::Arc;
use loom::thread;
use tidemark::batch::{AckError, BatchBuffer, BatchConfig, ManualClock, Message, Poll, StopReport};

const T0: Duration = Duration::ZERO;

fn buffer() -> Arc<BatchBuffer> {
    let mut c = BatchConfig::default();
    c.max_messages = 1;
    c.max_bytes = 2;
    c.linger = Duration::ZERO;
    c.capacity_messages = 2;
    // Two arena bytes for 1-byte messages: the third message reuses the first one's byte.
    c.capacity_bytes = 2;
    c.max_inflight_batches = 2;
    c.clock = Some(StdArc::new(ManualClock::new(T0)));
    Arc::new(BatchBuffer::new(c).unwrap())
}

fn handed_back(r: &StopReport) -> Vec<(u8, bool)> {
    r.handed_back
        .iter()
        .map(|h| (h.message.payload[0], h.outcome_unknown))
        .collect()
}

fn payloads(m: &[Message]) -> Vec<u8> {
    m.iter().map(|m| m.payload[0]).collect()
}

/// A producer pushes two messages while another thread closes admission and tries to finish the
/// stop. Each push is accepted or refused; every accepted one is in the report, in push order;
/// the stop never finishes while an accepted push is still publishing.
#[test]
fn push_vs_stop_admission_closing() {
    loom::model(|| {
        let b = buffer();
        let producer = {
            let b = b.clone();
            thread::spawn(move || {
                let first = b.try_push(vec![1], None).is_ok();
                let second = b.try_push(vec![2], None).is_ok();
                (first, second)
            })
        };
        let stopper = {
            let b = b.clone();
            thread::spawn(move || {
                b.begin_stop(T0);
                b.poll_stop(T0)
            })
        };
        let (first, second) = producer.join().unwrap();
        let early = stopper.join().unwrap();
        // Admission closes once: a refused push is never followed by an accepted one.
        assert!(first || !second, "accepted after a refusal");
        let report = early
            .clone()
            .or_else(|| b.poll_stop(T0))
            .expect("stop finishes");
        let mut want = Vec::new();
        if first {
            want.push((1, false));
        }
        if second {
            want.push((2, false));
        }
        assert_eq!(
            handed_back(&report),
            want,
            "an accepted push was lost or reordered"
        );
        assert_eq!(report.accepted, want.len() as u64);
        assert!(b.try_push(vec![3], None).is_err());
        if let Some(e) = early {
            assert!(StdArc::ptr_eq(&e, &b.poll_stop(T0).unwrap()), "one report");
        }
    });
}

/// A producer pushes three messages into a 2-slot ring while the sink takes and acks. The third
/// push can only be accepted after the first message was acked, and it reuses the first slot:
/// the producer's write there races the consumer's move-out unless edge R2 orders them.
#[test]
fn push_vs_take_at_the_ring_lap_boundary() {
    loom::model(|| {
        let b = buffer();
        let producer = {
            let b = b.clone();
            thread::spawn(move || {
                (1..=3u8)
                    .map(|i| b.try_push(vec![i], None).is_ok())
                    .collect::<Vec<_>>()
            })
        };
        let consumer = {
            let b = b.clone();
            thread::spawn(move || {
                let mut got = Vec::new();
                for _ in 0..2 {
                    if let Poll::Ready(batch) = b.poll_batch(T0) {
                        got.extend(payloads(batch.messages()));
                        b.ack(batch).unwrap();
                    }
                }
                got
            })
        };
        let accepted = producer.join().unwrap();
        let mut got = consumer.join().unwrap();
        // Drain what is left on the main thread.
        while let Poll::Ready(batch) = b.poll_batch(T0) {
            got.extend(payloads(batch.messages()));
            b.ack(batch).unwrap();
        }
        let want: Vec<u8> = (1..=3u8).filter(|i| accepted[*i as usize - 1]).collect();
        assert_eq!(got, want, "every accepted message delivered once, in order");
        assert!(accepted[0] && accepted[1], "two fit the capacity");
        let report = {
            b.begin_stop(T0);
            b.poll_stop(T0).unwrap()
        };
        assert_eq!(report.delivered, want.len() as u64);
        assert!(report.handed_back.is_empty());
    });
}

fn ack_or_nack_vs_stop(requeue: Option<bool>) {
    loom::model(move || {
        let b = buffer();
        b.try_push(vec![1], None).unwrap();
        b.try_push(vec![2], None).unwrap();
        let Poll::Ready(batch) = b.poll_batch(T0) else {
            panic!("a batch of one is due at once");
        };
        assert_eq!(payloads(batch.messages()), vec![1]);
        let sink = {
            let b = b.clone();
            thread::spawn(move || match requeue {
                None => b.ack(batch),
                Some(r) => b.nack(batch, r),
            })
        };
        let stopper = {
            let b = b.clone();
            thread::spawn(move || {
                b.begin_stop(T0);
                b.poll_stop(T0)
            })
        };
        let resolved = match sink.join().unwrap() {
            Ok(()) => true,
            Err(AckError::NotInFlight(_)) => false,
            Err(e) => panic!("{e}"),
        };
        let report = stopper
            .join()
            .unwrap()
            .or_else(|| b.poll_stop(T0))
            .expect("stop finishes");
        let back = handed_back(&report);
        match (resolved, requeue) {
            // Acked in time: delivered; only message 2 comes back.
            (true, None) => {
                assert_eq!((report.delivered, back), (1, vec![(2, false)]));
            }
            // Failed in time: a terminal state, not handed back.
            (true, Some(false)) => {
                assert_eq!((report.failed, back), (1, vec![(2, false)]));
            }
            // Requeued in time: handed back as never delivered, ahead of message 2.
            (true, Some(true)) => {
                assert_eq!(back, vec![(1, false), (2, false)]);
            }
            // Too late: the stop handed it back with its outcome unknown.
            (false, _) => {
                assert_eq!(back, vec![(1, true), (2, false)]);
                assert_eq!(report.unknown_batches.len(), 1);
            }
        }
        assert_eq!(
            report.accepted,
            report.delivered + report.failed + report.handed_back_count()
        );
    });
}

/// An ack racing the stop's deadline: delivered, or handed back as unknown; never both/neither.
#[test]
fn ack_vs_stop() {
    ack_or_nack_vs_stop(None);
}

/// A nack with requeue racing the stop: handed back once, in order.
#[test]
fn nack_requeue_vs_stop() {
    ack_or_nack_vs_stop(Some(true));
}

/// A nack without requeue racing the stop: failed, or handed back as unknown.
#[test]
fn nack_fail_vs_stop() {
    ack_or_nack_vs_stop(Some(false));
}

/// Two producers push one message each at once: their CASes on the one state word hand out
/// distinct tickets and arena bytes, and the sink gets both payloads intact, each producer's in
/// its own order.
#[test]
fn two_producers_share_the_reservation_word() {
    loom::model(|| {
        let b = buffer();
        let ps: Vec<_> = [7u8, 9u8]
            .into_iter()
            .map(|v| {
                let b = b.clone();
                thread::spawn(move || b.try_push_slice(&[v], None).is_ok())
            })
            .collect();
        let ok: Vec<bool> = ps.into_iter().map(|p| p.join().unwrap()).collect();
        assert_eq!(ok, [true, true], "two fit the capacity");
        let mut got = Vec::new();
        while let Poll::Ready(batch) = b.poll_batch(T0) {
            got.extend(batch.iter().map(|m| m.payload.to_vec()));
            b.ack(batch).unwrap();
        }
        got.sort();
        assert_eq!(got, [vec![7], vec![9]]);
    });
}

/// The sink parks in `next_batch` with nothing buffered (SLEEPING, threshold "one more
/// message", a real condvar wait) while a producer pushes: whichever comes first, the sink
/// gets the message. A lost wake-up leaves the sink waiting forever: a loom deadlock.
#[test]
fn sink_park_vs_push() {
    loom::model(|| {
        let b = buffer();
        let sink = {
            let b = b.clone();
            thread::spawn(move || {
                let batch = b.next_batch(Duration::from_secs(3600)).expect("a batch");
                let got = batch.get(0).payload.to_vec();
                b.ack(batch).unwrap();
                got
            })
        };
        b.try_push_slice(&[5], None).unwrap();
        assert_eq!(sink.join().unwrap(), [5]);
    });
}

/// The sink arms the notifier with `poll_batch_notify` and waits for it (a loom condvar) while
/// a producer pushes: the notification is never lost between the poll and the arming.
#[test]
fn armed_sink_vs_push() {
    use loom::sync::{Condvar, Mutex};
    loom::model(|| {
        let b = buffer();
        let signal = Arc::new((Mutex::new(false), Condvar::new()));
        {
            let signal = signal.clone();
            b.set_notifier(Some(StdArc::new(move || {
                let (m, cv) = &*signal;
                *m.lock().unwrap() = true;
                cv.notify_all();
            })));
        }
        let sink = {
            let b = b.clone();
            let signal = signal.clone();
            thread::spawn(move || {
                loop {
                    match b.poll_batch_notify(T0) {
                        Poll::Ready(batch) => {
                            let got = batch.get(0).payload.to_vec();
                            b.ack(batch).unwrap();
                            return got;
                        }
                        Poll::Wait(Some(_)) => thread::yield_now(), // a producer mid-publish
                        Poll::Wait(None) => {
                            let (m, cv) = &*signal;
                            let mut fired = m.lock().unwrap();
                            while !*fired {
                                fired = cv.wait(fired).unwrap();
                            }
                            *fired = false;
                        }
                        Poll::Closed => panic!("closed"),
                    }
                }
            })
        };
        b.try_push_slice(&[6], None).unwrap();
        assert_eq!(sink.join().unwrap(), [6]);
        b.set_notifier(None);
    });
}
