//! A small sequential reference model of [`BatchBuffer`](tidemark::batch::BatchBuffer)'s decisions
//! (docs/CONTRIBUTING.md habit 10): property tests drive it and the real buffer with the same
//! single-threaded operations and compare every answer. It tracks message ids and sizes, not
//! payloads, and recomputes everything from plain vectors on every call: slow, and obviously so.
//!
//! The rules it states (and the buffer must match):
//! - A message pushed between two sink looks (`poll`, `flush`, `poll_stop`) is stamped with the
//!   time of the earlier look; linger is due at `stamp + linger` of a batch's first message.
//! - A batch is the longest prefix of the ready messages (requeued first, then by arrival) with
//!   at most `max_messages` messages and `max_bytes` bytes (a first message alone may exceed it).
//!   It goes when: full by count; full by bytes (reached, or the next one does not fit, or one
//!   oversize message); stopping; linger due; or its first message was buffered before a flush.
//! - Capacity counts accepted messages that are not delivered, failed or handed back.
use std::time::Duration;

use tidemark::batch::{BatchConfig, FlushError, PushRefusal, StopReport, Trigger};

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[derive(Clone, Debug)]
struct Item {
    id: u64,
    len: u64,
    seq: u64,
    stamp: u64,
}

/// What [`ReferenceBatcher::poll`] answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefPoll {
    /// A batch: its number (0, 1, ...), the message ids in order, and the trigger.
    Ready(u64, Vec<u64>, Trigger),
    /// Nothing to take; the time until the next deadline (linger or stop), if any.
    Wait(Option<Duration>),
    /// Closed.
    Closed,
}

/// The reference model's stop report: counts, and the handed-back ids with "outcome unknown".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefReport {
    /// Messages accepted.
    pub accepted: u64,
    /// Messages acked.
    pub delivered: u64,
    /// Messages nacked without requeue.
    pub failed: u64,
    /// Handed back, in order: (id, outcome unknown).
    pub handed_back: Vec<(u64, bool)>,
    /// Batches in flight at the deadline.
    pub unknown_batches: Vec<u64>,
}

impl RefReport {
    /// The model's view of a real buffer's stop report, for messages that carry their model id
    /// as `offset.tx` (the convention of the property tests and the fuzz target). Panics on a
    /// handed-back message without an offset.
    pub fn of(report: &StopReport) -> RefReport {
        RefReport {
            accepted: report.accepted,
            delivered: report.delivered,
            failed: report.failed,
            handed_back: report
                .handed_back
                .iter()
                .map(|h| {
                    let id = h.message.offset.expect("model messages carry an offset").tx;
                    (id, h.outcome_unknown)
                })
                .collect(),
            unknown_batches: report.unknown_batches.iter().map(|b| b.get()).collect(),
        }
    }
}

/// The sequential model. See the module documentation.
#[derive(Clone, Debug)]
pub struct ReferenceBatcher {
    max_messages: usize,
    max_bytes: u64,
    linger: u64,
    capacity_messages: u64,
    capacity_bytes: u64,
    max_inflight: usize,
    pushed: Vec<(u64, u64)>,
    ready: Vec<Item>,
    in_flight: Vec<(u64, Vec<Item>)>,
    look: u64,
    received: u64,
    flush_below: u64,
    next_batch: u64,
    stop_deadline: Option<u64>,
    report: Option<RefReport>,
    delivered: u64,
    failed: u64,
}

impl ReferenceBatcher {
    /// A model of a buffer built with `config` at time `now`.
    pub fn new(config: &BatchConfig, now: Duration) -> ReferenceBatcher {
        ReferenceBatcher {
            max_messages: config.max_messages,
            max_bytes: config.max_bytes,
            linger: nanos(config.linger),
            capacity_messages: config.capacity_messages as u64,
            capacity_bytes: config.capacity_bytes,
            max_inflight: config.max_inflight_batches,
            pushed: Vec::new(),
            ready: Vec::new(),
            in_flight: Vec::new(),
            look: nanos(now),
            received: 0,
            flush_below: 0,
            next_batch: 0,
            stop_deadline: None,
            report: None,
            delivered: 0,
            failed: 0,
        }
    }

    fn held(&self) -> (u64, u64) {
        let all = self
            .pushed
            .iter()
            .map(|&(_, len)| len)
            .chain(self.ready.iter().map(|i| i.len))
            .chain(
                self.in_flight
                    .iter()
                    .flat_map(|(_, b)| b.iter().map(|i| i.len)),
            );
        all.fold((0, 0), |(n, b), len| (n + 1, b + len))
    }

    /// Pushes message `id` of `len` bytes.
    pub fn push(&mut self, id: u64, len: usize) -> Result<(), PushRefusal> {
        let len = len as u64;
        if len > self.capacity_bytes {
            return Err(PushRefusal::TooLarge);
        }
        if self.report.is_some() {
            return Err(PushRefusal::Closed);
        }
        if self.stop_deadline.is_some() {
            return Err(PushRefusal::Stopping);
        }
        let (n, b) = self.held();
        if n + 1 > self.capacity_messages || b + len > self.capacity_bytes {
            return Err(PushRefusal::Full);
        }
        self.pushed.push((id, len));
        Ok(())
    }

    fn look_at(&mut self, now: u64) {
        for (id, len) in std::mem::take(&mut self.pushed) {
            self.ready.push(Item {
                id,
                len,
                seq: self.received,
                stamp: self.look,
            });
            self.received += 1;
        }
        self.look = self.look.max(now);
    }

    fn try_close(&mut self, now: u64) {
        let Some(deadline) = self.stop_deadline else {
            return;
        };
        if self.report.is_some() {
            return;
        }
        if !(self.ready.is_empty() && self.in_flight.is_empty()) && now < deadline {
            return;
        }
        let mut back: Vec<(u64, u64, bool)> =
            self.ready.drain(..).map(|i| (i.seq, i.id, false)).collect();
        let mut unknown_batches = Vec::new();
        for (b, items) in self.in_flight.drain(..) {
            unknown_batches.push(b);
            back.extend(items.into_iter().map(|i| (i.seq, i.id, true)));
        }
        back.sort();
        unknown_batches.sort();
        self.report = Some(RefReport {
            accepted: self.received,
            delivered: self.delivered,
            failed: self.failed,
            handed_back: back.into_iter().map(|(_, id, u)| (id, u)).collect(),
            unknown_batches,
        });
    }

    /// The sink polls at `now`.
    pub fn poll(&mut self, now: Duration) -> RefPoll {
        let now = nanos(now);
        if self.report.is_some() {
            return RefPoll::Closed;
        }
        self.look_at(now);
        self.try_close(now);
        if self.report.is_some() {
            return RefPoll::Closed;
        }
        let stop_wait = self.stop_deadline.map(|d| d.saturating_sub(now));
        if self.ready.is_empty() || self.in_flight.len() >= self.max_inflight {
            return RefPoll::Wait(stop_wait.map(Duration::from_nanos));
        }
        // The longest prefix within both limits (the first message always fits).
        let mut n = 0;
        let mut bytes = 0;
        while n < self.ready.len()
            && n < self.max_messages
            && (n == 0 || bytes + self.ready[n].len <= self.max_bytes)
            && bytes < self.max_bytes
        {
            bytes += self.ready[n].len;
            n += 1;
        }
        let next_does_not_fit = n < self.ready.len() && n < self.max_messages;
        let trigger = if n == self.max_messages {
            Some(Trigger::Count)
        } else if bytes >= self.max_bytes || next_does_not_fit {
            Some(Trigger::Bytes)
        } else if self.stop_deadline.is_some() {
            Some(Trigger::Stop)
        } else if self.ready[0].stamp.saturating_add(self.linger) <= now {
            Some(Trigger::Linger)
        } else if self.ready[0].seq < self.flush_below {
            Some(Trigger::Flush)
        } else {
            None
        };
        let Some(trigger) = trigger else {
            let due = self.ready[0].stamp.saturating_add(self.linger) - now;
            return RefPoll::Wait(Some(Duration::from_nanos(due)));
        };
        let items: Vec<Item> = self.ready.drain(..n).collect();
        let ids = items.iter().map(|i| i.id).collect();
        let b = self.next_batch;
        self.next_batch += 1;
        self.in_flight.push((b, items));
        RefPoll::Ready(b, ids, trigger)
    }

    fn take(&mut self, batch: u64) -> Option<Vec<Item>> {
        let i = self.in_flight.iter().position(|(b, _)| *b == batch)?;
        Some(self.in_flight.remove(i).1)
    }

    /// Acks batch `batch` at `now`; false if it is not in flight.
    pub fn ack(&mut self, batch: u64, now: Duration) -> bool {
        let Some(items) = self.take(batch) else {
            return false;
        };
        self.delivered += items.len() as u64;
        self.after_resolve(now);
        true
    }

    /// Nacks batch `batch` at `now`; false if it is not in flight.
    pub fn nack(&mut self, batch: u64, requeue: bool, now: Duration) -> bool {
        let Some(items) = self.take(batch) else {
            return false;
        };
        if requeue {
            let stamp = items[0].stamp;
            self.ready
                .extend(items.into_iter().map(|i| Item { stamp, ..i }));
            self.ready.sort_by_key(|i| i.seq);
        } else {
            self.failed += items.len() as u64;
        }
        self.after_resolve(now);
        true
    }

    fn after_resolve(&mut self, now: Duration) {
        if self.stop_deadline.is_some() {
            let now = nanos(now);
            self.look_at(now);
            self.try_close(now);
        }
    }

    /// The marking half of a flush at `now`: everything accepted so far is due at once.
    pub fn flush_mark(&mut self, now: Duration) {
        if self.report.is_some() {
            return;
        }
        self.look_at(nanos(now));
        self.flush_below = self.flush_below.max(self.received);
    }

    /// A flush at `now` with a deadline of `now`: marks everything due, then answers at once
    /// (`Ok` only when nothing accepted is unresolved).
    pub fn flush(&mut self, now: Duration) -> Result<(), FlushError> {
        if self.report.is_some() {
            return Err(FlushError::Closed);
        }
        self.flush_mark(now);
        if self.ready.is_empty() && self.in_flight.is_empty() {
            Ok(())
        } else {
            Err(FlushError::Timeout)
        }
    }

    /// Begins a stop with `deadline`.
    pub fn begin_stop(&mut self, deadline: Duration) {
        if self.report.is_none() {
            let d = nanos(deadline);
            self.stop_deadline = Some(self.stop_deadline.map_or(d, |x| x.min(d)));
        }
    }

    /// The report once the stop finished.
    pub fn poll_stop(&mut self, now: Duration) -> Option<RefReport> {
        if self.report.is_none() {
            self.stop_deadline?;
            let now = nanos(now);
            self.look_at(now);
            self.try_close(now);
        }
        self.report.clone()
    }
}
