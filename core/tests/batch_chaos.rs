//! Chaos: many producers, a sink with random outcomes (ack, nack-requeue, nack-fail, stall), a
//! stop at a random moment. Every accepted message must end in exactly one terminal state, and
//! per-producer order must hold.
use std::collections::HashMap;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use proptest::prelude::*;
use tidemark::batch::{
    AckError, Batch, BatchBuffer, BatchConfig, Message, PushRefusal, State, TakeError,
};

#[derive(Clone, Copy, Debug)]
enum SinkMove {
    Ack,
    Requeue,
    Fail,
    Stall,
}

fn sink_move() -> impl Strategy<Value = SinkMove> {
    prop_oneof![
        6 => Just(SinkMove::Ack),
        2 => Just(SinkMove::Requeue),
        1 => Just(SinkMove::Fail),
        1 => Just(SinkMove::Stall),
    ]
}

fn id(p: u64, i: u64) -> u64 {
    p << 32 | i
}

fn id_of(m: &Message) -> u64 {
    u64::from_le_bytes(m.payload[..8].try_into().unwrap())
}

#[derive(Debug, Default)]
struct SinkLog {
    /// Every emission, in order: (batch id, message ids).
    emitted: Vec<(u64, Vec<u64>)>,
    delivered: Vec<u64>,
    failed: Vec<u64>,
    /// Batches the sink kept and never resolved.
    stalled: Vec<Batch>,
    /// Their ids and message ids, plus batches resolved too late (after the stop deadline).
    stalled_ids: Vec<(u64, Vec<u64>)>,
}

/// One chaos run's parameters.
#[derive(Clone, Debug)]
struct Case {
    producers: u64,
    per_producer: u64,
    max_messages: usize,
    capacity: usize,
    inflight: usize,
    linger_us: u64,
    moves: Vec<SinkMove>,
    stop_after_us: u64,
    grace_ms: u64,
}

fn run(case: Case) -> Result<(), TestCaseError> {
    let Case {
        producers,
        per_producer,
        max_messages,
        capacity,
        inflight,
        linger_us,
        moves,
        stop_after_us,
        grace_ms,
    } = case;
    let mut c = BatchConfig::default();
    c.max_messages = max_messages;
    c.max_bytes = 64 * max_messages as u64;
    c.linger = Duration::from_micros(linger_us);
    c.capacity_messages = capacity;
    c.max_inflight_batches = inflight;
    let buffer = Arc::new(BatchBuffer::new(c).unwrap());

    let sink = {
        let buffer = buffer.clone();
        thread::spawn(move || {
            let mut log = SinkLog::default();
            let mut k = 0;
            loop {
                let b = match buffer.next_batch(Duration::from_millis(2)) {
                    Ok(b) => b,
                    Err(TakeError::Timeout) => continue,
                    Err(TakeError::Closed) => return log,
                };
                let ids: Vec<u64> = b.messages().iter().map(id_of).collect();
                log.emitted.push((b.id().get(), ids.clone()));
                let mv = moves[k % moves.len()];
                k += 1;
                let (r, terminal) = match mv {
                    SinkMove::Ack => (buffer.ack(b), Some(&mut log.delivered)),
                    SinkMove::Requeue => (buffer.nack(b, true), None),
                    SinkMove::Fail => (buffer.nack(b, false), Some(&mut log.failed)),
                    SinkMove::Stall => {
                        log.stalled_ids.push((b.id().get(), ids));
                        log.stalled.push(b);
                        continue;
                    }
                };
                match r {
                    Ok(()) => terminal
                        .into_iter()
                        .for_each(|t| t.extend(ids.iter().copied())),
                    // Past the stop deadline: the stop handed the batch back (outcome unknown).
                    Err(AckError::NotInFlight(b)) => {
                        assert_ne!(buffer.state(), State::Running);
                        log.stalled_ids.push((b.id().get(), ids));
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        })
    };
    let producer_threads: Vec<_> = (0..producers)
        .map(|p| {
            let buffer = buffer.clone();
            thread::spawn(move || {
                let mut accepted = Vec::new();
                let mut i = 0;
                while i < per_producer {
                    let mut payload = id(p, i).to_le_bytes().to_vec();
                    payload.resize(8 + (i % 24) as usize, 0);
                    // Mix the three push calls.
                    let r = match i % 3 {
                        0 => buffer.try_push(payload, None).map_err(|e| e.reason),
                        1 => buffer
                            .push_timeout(payload, None, Duration::from_micros(300))
                            .map_err(|e| e.reason),
                        _ => buffer
                            .push_many(vec![Message::new(payload)])
                            .map_err(|e| e.reason),
                    };
                    match r {
                        Ok(()) => {
                            accepted.push(id(p, i));
                            i += 1;
                        }
                        Err(PushRefusal::Full) => thread::yield_now(),
                        Err(PushRefusal::Stopping | PushRefusal::Closed) => break,
                        Err(r) => panic!("unexpected refusal {r:?}"),
                    }
                }
                accepted
            })
        })
        .collect();

    thread::sleep(Duration::from_micros(stop_after_us));
    let report = buffer.stop(buffer.now() + Duration::from_millis(grace_ms));
    let accepted: Vec<Vec<u64>> = producer_threads
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    let log = sink.join().unwrap();

    // Exactly one terminal state per accepted message.
    let mut state: HashMap<u64, &str> = HashMap::new();
    let all = accepted.iter().flatten().count() as u64;
    for (ids, what) in [(&log.delivered, "delivered"), (&log.failed, "failed")] {
        for &m in ids {
            prop_assert!(state.insert(m, what).is_none(), "{} twice: {}", m, what);
        }
    }
    for h in &report.handed_back {
        let m = id_of(&h.message);
        prop_assert!(
            state.insert(m, "handed back").is_none(),
            "{} handed back and {:?}",
            m,
            state.get(&m)
        );
    }
    prop_assert_eq!(state.len() as u64, all);
    for m in accepted.iter().flatten() {
        prop_assert!(
            state.contains_key(m),
            "accepted {} has no terminal state",
            m
        );
    }
    prop_assert_eq!(report.accepted, all);
    prop_assert_eq!(report.delivered, log.delivered.len() as u64);
    prop_assert_eq!(report.failed, log.failed.len() as u64);
    prop_assert_eq!(
        report.accepted,
        report.delivered + report.failed + report.handed_back_count()
    );

    // Stalled batches are exactly the "outcome unknown" ones.
    let mut stalled_ids: Vec<u64> = log
        .stalled_ids
        .iter()
        .flat_map(|(_, ids)| ids.iter().copied())
        .collect();
    let mut unknown: Vec<u64> = report
        .handed_back
        .iter()
        .filter(|h| h.outcome_unknown)
        .map(|h| id_of(&h.message))
        .collect();
    stalled_ids.sort_unstable();
    unknown.sort_unstable();
    prop_assert_eq!(stalled_ids, unknown);
    let mut stalled_batches: Vec<u64> = log.stalled_ids.iter().map(|(b, _)| *b).collect();
    stalled_batches.sort_unstable();
    let reported: Vec<u64> = report.unknown_batches.iter().map(|b| b.get()).collect();
    prop_assert_eq!(stalled_batches, reported);

    // Per-producer order: inside each batch; across first emissions; in the hand-back.
    let increasing = |seq: &mut dyn Iterator<Item = u64>| -> bool {
        let mut last: HashMap<u64, u64> = HashMap::new();
        for m in seq {
            if last.insert(m >> 32, m).is_some_and(|prev| prev >= m) {
                return false;
            }
        }
        true
    };
    for (_, ids) in &log.emitted {
        prop_assert!(
            increasing(&mut ids.iter().copied()),
            "batch out of order: {:?}",
            ids
        );
    }
    let mut seen = std::collections::HashSet::new();
    let mut firsts = log
        .emitted
        .iter()
        .flat_map(|(_, ids)| ids.iter().copied())
        .filter(|m| seen.insert(*m));
    prop_assert!(increasing(&mut firsts), "first emissions out of order");
    prop_assert!(increasing(
        &mut report.handed_back.iter().map(|h| id_of(&h.message))
    ));
    if inflight == 1 {
        prop_assert!(increasing(&mut log.delivered.iter().copied()));
    }
    // Late acks of stalled batches are refused and change nothing.
    for b in log.stalled {
        prop_assert!(buffer.ack(b).is_err());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn every_message_ends_exactly_once_in_order(
        producers in 1u64..5,
        per_producer in 1u64..300,
        max_messages in 1usize..16,
        extra_capacity in 0usize..64,
        inflight in 1usize..4,
        linger_us in 0u64..2000,
        moves in proptest::collection::vec(sink_move(), 1..12),
        stop_after_us in 0u64..4000,
        grace_ms in 0u64..15,
    ) {
        run(Case {
            producers,
            per_producer,
            max_messages,
            capacity: max_messages + extra_capacity,
            inflight,
            linger_us,
            moves,
            stop_after_us,
            grace_ms,
        })?;
    }
}
