//! Sink-side state, owned by whoever holds the buffer's sink mutex: the staged messages, the
//! batches in flight, the drain and the counters. Nothing here is concurrent; the concurrency
//! is in `ring.rs` (messages in) and `word.rs` (admission and capacity).
//!
//! A message taken from the ring is staged as a descriptor: its payload stays in the ring's
//! arena until the batch that carries it is built (one copy, into the batch's own allocation)
//! or it is handed back. Requeued messages carry their own bytes.
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use super::ring::{Head, Meta, Ring};
use super::types::{Batch, BatchData, BatchId, BatchStats, HandedBack, StopReport, Trigger};
use super::word::Word;
use super::{Message, Offset};
use crate::sync::{AtomicU64, Ordering};

/// The checked limits, in the units the algorithm uses.
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    pub(super) max_messages: usize,
    pub(super) max_bytes: u64,
    pub(super) linger: u64,
    pub(super) capacity_messages: u64,
    pub(super) capacity_bytes: u64,
    pub(super) max_inflight: usize,
}

/// A message the sink side has received (from the ring, or back from a nack).
#[derive(Debug)]
pub(super) struct Staged {
    /// Position in the order the sink side received messages (per producer: push order).
    pub(super) seq: u64,
    /// Lower bound of its arrival time (ns on the buffer clock): linger counts from here.
    pub(super) stamp: u64,
    pub(super) len: u64,
    pub(super) offset: Option<Offset>,
    pub(super) bytes: Bytes,
}

/// Where a staged message's payload is.
#[derive(Debug)]
pub(super) enum Bytes {
    /// In the ring's arena at this (unwrapped) byte position, until the message is released.
    Arena(u64),
    /// Its own copy (a requeued message).
    Owned(Vec<u8>),
}

impl Staged {
    /// An owned copy of the message.
    fn to_message(&self, ring: &Ring) -> Message {
        let payload = match &self.bytes {
            Bytes::Arena(pos) => {
                // SAFETY: a staged arena message was taken from `ring` and is not released.
                let (a, b) = unsafe { ring.bytes(*pos, self.len) };
                [a, b].concat()
            }
            Bytes::Owned(v) => v.clone(),
        };
        Message {
            payload,
            offset: self.offset,
        }
    }
}

/// A batch handed out and not yet acked or nacked.
#[derive(Debug)]
pub(super) struct InFlight {
    pub(super) data: Arc<BatchData>,
    pub(super) min_seq: u64,
    pub(super) max_seq: u64,
    pub(super) messages: u64,
    pub(super) bytes: u64,
    pub(super) highest: Option<Offset>,
    pub(super) stamp: u64,
}

/// What the sink should do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Plan {
    /// Emit the first `n` ready messages.
    Emit(usize, Trigger),
    /// Nothing is ready.
    Idle,
    /// A batch could go, but `max_inflight_batches` are out.
    Blocked,
    /// A partial batch waits for its linger deadline (ns).
    Linger(u64),
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) delivered: u64,
    pub(super) failed: u64,
    pub(super) requeued: u64,
    pub(super) handed_back: u64,
    pub(super) late_acks: u64,
    pub(super) by_trigger: TriggerCounts,
}

/// Batches emitted, by the trigger that sent them.
#[derive(Debug, Default)]
pub(super) struct TriggerCounts {
    count: u64,
    bytes: u64,
    linger: u64,
    flush: u64,
    stop: u64,
}

impl TriggerCounts {
    fn bump(&mut self, t: Trigger) {
        let n = match t {
            Trigger::Count => &mut self.count,
            Trigger::Bytes => &mut self.bytes,
            Trigger::Linger => &mut self.linger,
            Trigger::Flush => &mut self.flush,
            Trigger::Stop => &mut self.stop,
        };
        *n += 1;
    }
}

pub(super) struct Sink {
    pub(super) head: Head,
    /// Byte position (unwrapped) of the next message taken from the ring.
    pub(super) byte_pos: u64,
    /// Seq of the next message taken from the ring (= messages received so far).
    pub(super) next_seq: u64,
    /// Stamp for messages the next drain finds: the time of the previous look (see `drain`).
    pub(super) look: u64,
    /// Ring positions below which older looks' stamps apply (see `drain_up_to`), ascending.
    pub(super) bounds: VecDeque<(u64, u64)>,
    /// Received, not yet in a batch; sorted by seq (requeued ones are merged back in).
    pub(super) ready: VecDeque<Staged>,
    pub(super) ready_bytes: u64,
    pub(super) in_flight: BTreeMap<u64, InFlight>,
    pub(super) in_flight_messages: u64,
    pub(super) in_flight_bytes: u64,
    pub(super) next_batch_id: u64,
    /// Messages with a seq below this are wanted by a flush: no linger for them.
    pub(super) flush_target: u64,
    /// Set by the first stop (the earliest deadline wins): the buffer is draining.
    pub(super) drain_deadline: Option<u64>,
    /// Set when the buffer closes.
    pub(super) report: Option<Arc<StopReport>>,
    pub(super) counters: Counters,
    /// Acked batches whose offsets may not be reported yet (an earlier message is unresolved),
    /// keyed by the batch's highest seq. Only kept when a flush link is configured.
    pub(super) acked_unreported: BTreeMap<u64, Offset>,
    pub(super) reported: Option<Offset>,
    /// Threads waiting on the progress condition variable (flush, stop).
    pub(super) progress_waiters: usize,
    /// `poll_batch_notify` armed the notifier with nothing buffered (see `look`).
    pub(super) armed_idle: bool,
}

impl Sink {
    pub(super) fn new(head: Head, now: u64) -> Sink {
        Sink {
            head,
            byte_pos: 0,
            next_seq: 0,
            look: now,
            bounds: VecDeque::new(),
            ready: VecDeque::new(),
            ready_bytes: 0,
            in_flight: BTreeMap::new(),
            in_flight_messages: 0,
            in_flight_bytes: 0,
            next_batch_id: 0,
            flush_target: 0,
            drain_deadline: None,
            report: None,
            counters: Counters::default(),
            acked_unreported: BTreeMap::new(),
            reported: None,
            progress_waiters: 0,
            armed_idle: false,
        }
    }

    /// Messages the sink side holds that have no terminal state yet.
    pub(super) fn held_messages(&self) -> u64 {
        self.ready.len() as u64 + self.in_flight_messages
    }

    pub(super) fn held_bytes(&self) -> u64 {
        self.ready_bytes + self.in_flight_bytes
    }

    /// Moves every published message from the ring to `ready`.
    pub(super) fn drain(&mut self, ring: &Ring, word: &AtomicU64, now: u64) {
        self.drain_up_to(ring, word, now, usize::MAX);
    }

    /// Moves published messages from the ring to `ready` until it holds more than `want`
    /// (enough to decide the next batch exactly) or the ring has none left.
    ///
    /// Arrival stamps: a message is stamped with the time of the sink's last look before it was
    /// claimed. A look that empties the ring: everything it found was claimed before it, so the
    /// previous look's time is a lower bound of their arrival. A look that stops early records
    /// the ring's claim position with the current stamp first (`bounds`), so the messages it
    /// left behind keep that older stamp. Linger measured from these stamps never fires late; it
    /// may fire early by at most the gap between two looks. (A sink parked while idle is woken
    /// by the first push and looks at once; see `BatchBuffer::next_batch`.)
    pub(super) fn drain_up_to(&mut self, ring: &Ring, word: &AtomicU64, now: u64, want: usize) {
        loop {
            if self.ready.len() > want {
                // Relaxed: a position only (which messages count as claimed "before now" for
                // arrival stamps); the data edges are the ring's.
                let tail = Word(word.load(Ordering::Relaxed)).messages();
                let claimed = Ring::unwrap_tail(&self.head, tail);
                let newer = self.bounds.back().is_none_or(|&(end, _)| end < claimed);
                if claimed > self.head.position() && newer {
                    self.bounds.push_back((claimed, self.look));
                }
                break;
            }
            let pos = self.head.position();
            let Some(Meta { len, offset }) = ring.take(&mut self.head) else {
                break;
            };
            while self.bounds.front().is_some_and(|&(end, _)| end <= pos) {
                self.bounds.pop_front();
            }
            let stamp = self.bounds.front().map_or(self.look, |&(_, s)| s);
            self.ready_bytes += len;
            self.ready.push_back(Staged {
                seq: self.next_seq,
                stamp,
                len,
                offset,
                bytes: Bytes::Arena(self.byte_pos),
            });
            self.byte_pos += len;
            self.next_seq += 1;
        }
        self.look = self.look.max(now);
    }

    /// Decides what the next batch is, if any (see `Trigger` for the order of reasons).
    pub(super) fn plan(&self, now: u64, lim: &Limits) -> Plan {
        let Some(first) = self.ready.front() else {
            return Plan::Idle;
        };
        if self.in_flight.len() >= lim.max_inflight {
            return Plan::Blocked;
        }
        let (n, size_trigger) =
            if self.ready.len() < lim.max_messages && self.ready_bytes < lim.max_bytes {
                // Everything fits and no size limit is reached.
                (self.ready.len(), None)
            } else {
                let (mut n, mut bytes, mut closed) = (0usize, 0u64, false);
                for s in &self.ready {
                    if n == lim.max_messages {
                        break;
                    }
                    let len = s.len;
                    if n > 0 && bytes + len > lim.max_bytes {
                        closed = true;
                        break;
                    }
                    n += 1;
                    bytes += len;
                    if bytes >= lim.max_bytes {
                        break;
                    }
                }
                let t = if n == lim.max_messages {
                    Some(Trigger::Count)
                } else if closed || bytes >= lim.max_bytes {
                    Some(Trigger::Bytes)
                } else {
                    None
                };
                (n, t)
            };
        if let Some(t) = size_trigger {
            return Plan::Emit(n, t);
        }
        if self.drain_deadline.is_some() {
            return Plan::Emit(n, Trigger::Stop);
        }
        let due = first.stamp.saturating_add(lim.linger);
        if due <= now {
            Plan::Emit(n, Trigger::Linger)
        } else if first.seq < self.flush_target {
            Plan::Emit(n, Trigger::Flush)
        } else {
            Plan::Linger(due)
        }
    }

    /// Hands out the first `n` ready messages as a batch: their payloads are copied, back to
    /// back, into the batch's one allocation.
    pub(super) fn emit(&mut self, n: usize, trigger: Trigger, owner: usize, ring: &Ring) -> Batch {
        debug_assert!(n > 0 && n <= self.ready.len());
        let bytes: u64 = self.ready.iter().take(n).map(|s| s.len).sum();
        let mut data = BatchData::with_capacity(n, bytes as usize);
        let mut highest = None::<Offset>;
        let stamp = self.ready.front().map_or(0, |s| s.stamp);
        // Fresh messages lie back to back in the arena: each run of them is copied in one go
        // (two pieces when it wraps), after its descriptors.
        let mut run: Option<(u64, u64)> = None; // (arena position, bytes) not yet copied
        let flush = |data: &mut BatchData, run: &mut Option<(u64, u64)>| {
            if let Some((pos, len)) = run.take() {
                // SAFETY: staged arena messages were taken from `ring` and are not released
                // (they are released only once this batch lands, after this copy); a run
                // covers consecutive such messages.
                let (a, b) = unsafe { ring.bytes(pos, len) };
                data.payload.extend_from_slice(a);
                data.payload.extend_from_slice(b);
            }
        };
        for s in self.ready.drain(..n) {
            highest = highest.max(s.offset);
            data.push_desc(s.seq, s.offset, s.len);
            match s.bytes {
                Bytes::Arena(pos) => match &mut run {
                    Some((start, len)) if *start + *len == pos => *len += s.len,
                    _ => {
                        flush(&mut data, &mut run);
                        run = Some((pos, s.len));
                    }
                },
                Bytes::Owned(v) => {
                    flush(&mut data, &mut run);
                    data.payload.extend_from_slice(&v);
                }
            }
        }
        flush(&mut data, &mut run);
        debug_assert_eq!(data.payload.len() as u64, bytes);
        self.ready_bytes -= bytes;
        self.counters.by_trigger.bump(trigger);
        let id = self.next_batch_id;
        self.next_batch_id += 1;
        let data = Arc::new(data);
        self.in_flight.insert(
            id,
            InFlight {
                data: Arc::clone(&data),
                min_seq: data.seqs[0],
                max_seq: data.seqs[n - 1],
                messages: n as u64,
                bytes,
                highest,
                stamp,
            },
        );
        self.in_flight_messages += n as u64;
        self.in_flight_bytes += bytes;
        Batch {
            id: BatchId(id),
            owner,
            trigger,
            bytes,
            highest_offset: highest,
            data,
        }
    }

    /// Takes a batch out of the in-flight table (its outcome is now known).
    pub(super) fn land(&mut self, batch: &Batch) -> Option<InFlight> {
        let f = self.in_flight.remove(&batch.id.0)?;
        self.in_flight_messages -= f.messages;
        self.in_flight_bytes -= f.bytes;
        Some(f)
    }

    /// Puts a nacked batch's messages back, ahead of newer ones, in their original order.
    pub(super) fn requeue(&mut self, f: InFlight) {
        let stamp = f.stamp;
        let bytes = f.bytes;
        let back: Vec<Staged> = f
            .data
            .iter()
            .zip(&f.data.seqs)
            .map(|(m, &seq)| Staged {
                seq,
                stamp,
                len: m.payload.len() as u64,
                offset: m.offset,
                bytes: Bytes::Owned(m.payload.to_vec()),
            })
            .collect();
        self.counters.requeued += back.len() as u64;
        self.ready_bytes += bytes;
        let before_all = match (back.last(), self.ready.front()) {
            (Some(last), Some(front)) => last.seq < front.seq,
            _ => true,
        };
        if before_all {
            for s in back.into_iter().rev() {
                self.ready.push_front(s);
            }
        } else {
            // Another requeued batch interleaves with this one: merge by seq.
            let mut merged = VecDeque::with_capacity(self.ready.len() + back.len());
            let mut old = std::mem::take(&mut self.ready).into_iter().peekable();
            let mut new = back.into_iter().peekable();
            loop {
                let take_new = match (old.peek(), new.peek()) {
                    (Some(o), Some(n)) => n.seq < o.seq,
                    (None, Some(_)) => true,
                    (Some(_), None) => false,
                    (None, None) => break,
                };
                let next = if take_new { new.next() } else { old.next() };
                merged.extend(next);
            }
            self.ready = merged;
        }
    }

    /// Every message with a seq below this has a terminal state.
    pub(super) fn low_water(&self) -> u64 {
        let mut lw = self.next_seq;
        if let Some(f) = self.ready.front() {
            lw = lw.min(f.seq);
        }
        for f in self.in_flight.values() {
            lw = lw.min(f.min_seq);
        }
        lw
    }

    /// The offset to report to the flush link now, if it moved: the highest offset of acked
    /// batches all of whose messages, and every earlier message, have a terminal state.
    pub(super) fn link_offset(&mut self) -> Option<Offset> {
        let lw = self.low_water();
        let mut best = None;
        while let Some(entry) = self.acked_unreported.first_entry() {
            if *entry.key() >= lw {
                break;
            }
            best = best.max(Some(entry.remove()));
        }
        let best = best?;
        if self.reported.is_some_and(|r| r >= best) {
            return None;
        }
        self.reported = Some(best);
        Some(best)
    }

    /// Closes the sink side: everything still held is handed back, in seq order. The caller
    /// releases `held_messages()/held_bytes()` from the state word first.
    pub(super) fn finish(&mut self, now: u64, ring: &Ring) -> Arc<StopReport> {
        let deadline = self.drain_deadline.unwrap_or(now);
        let mut back: Vec<(u64, HandedBack)> = Vec::with_capacity(self.held_messages() as usize);
        for s in std::mem::take(&mut self.ready) {
            back.push((
                s.seq,
                HandedBack {
                    message: s.to_message(ring),
                    outcome_unknown: false,
                },
            ));
        }
        self.ready_bytes = 0;
        let mut unknown_batches = Vec::with_capacity(self.in_flight.len());
        let mut in_flight_unknown = 0;
        for (id, f) in std::mem::take(&mut self.in_flight) {
            unknown_batches.push(BatchId(id));
            in_flight_unknown += f.messages;
            for (m, &seq) in f.data.iter().zip(&f.data.seqs) {
                back.push((
                    seq,
                    HandedBack {
                        message: m.to_message(),
                        outcome_unknown: true,
                    },
                ));
            }
        }
        self.in_flight_messages = 0;
        self.in_flight_bytes = 0;
        // Runs of increasing seqs: the stable sort is close to linear here.
        back.sort_by_key(|(seq, _)| *seq);
        let handed_back: Vec<HandedBack> = back.into_iter().map(|(_, h)| h).collect();
        self.counters.handed_back += handed_back.len() as u64;
        let c = &self.counters;
        debug_assert_eq!(
            self.next_seq,
            c.delivered + c.failed + c.handed_back,
            "every received message has exactly one terminal state"
        );
        let report = Arc::new(StopReport {
            accepted: self.next_seq,
            delivered: c.delivered,
            failed: c.failed,
            timed_out: !handed_back.is_empty() && now >= deadline,
            handed_back,
            in_flight_unknown,
            unknown_batches,
        });
        self.report = Some(Arc::clone(&report));
        report
    }

    /// The sink-side part of the stats; the caller fills in what the state word knows.
    pub(super) fn stats(&self) -> BatchStats {
        let c = &self.counters;
        BatchStats {
            batches_by_count: c.by_trigger.count,
            batches_by_bytes: c.by_trigger.bytes,
            batches_by_linger: c.by_trigger.linger,
            batches_by_flush: c.by_trigger.flush,
            batches_by_stop: c.by_trigger.stop,
            delivered: c.delivered,
            failed: c.failed,
            requeued: c.requeued,
            handed_back: c.handed_back,
            in_flight_batches: self.in_flight.len() as u64,
            in_flight_messages: self.in_flight_messages,
            late_acks: c.late_acks,
            ..BatchStats::default()
        }
    }
}
