//! The sink side of [`BatchBuffer`]: polling, blocking and armed takes, ack and nack.
use std::time::{Duration, Instant};

use super::sink::{Plan, Sink};
use super::types::nanos;
use super::word::{KICK, SLEEPING, Threshold, Word};
use super::*;
use crate::sync::{Backoff, Ordering};

impl BatchBuffer {
    /// Non-blocking: a ready batch, or how long until the next linger deadline. `now` is on the
    /// buffer's clock ([`now`](Self::now)).
    pub fn poll_batch(&self, now: Duration) -> Poll {
        let now = nanos(now);
        let mut st = self.sink.lock();
        match self.poll_locked(&mut st, now) {
            Step::Ready(b) => Poll::Ready(b),
            Step::Closed => Poll::Closed,
            Step::Wait(plan) => Poll::Wait(self.wait_hint(&st, plan, now)),
        }
    }

    /// Sets (or with `None` removes) the callback that tells an armed sink to look again (see
    /// [`poll_batch_notify`](Self::poll_batch_notify)). It runs on the thread whose call made
    /// the batch due (a push, an ack or nack, a stop), after the buffer's own locks are
    /// released; it should only signal (send a message, write to a pipe) and must not block.
    pub fn set_notifier(&self, notifier: Option<Notifier>) {
        *self.notifier.lock() = notifier;
    }

    /// Like [`poll_batch`](Self::poll_batch), and when nothing is ready it *arms* the notifier:
    /// it is then called once, when a push reaches a size trigger (or, with nothing buffered,
    /// when the first message arrives), or an ack, nack or stop changes what the sink may do.
    /// Linger deadlines are not notified: the `Wait` hint says when to poll again. (While a
    /// producer has reserved but not yet published, it returns `Wait(Some(≤ 50 µs))` without
    /// arming: poll again after that wait.) So a sink
    /// with no thread of its own loops: poll, and on `Wait` wait for the notification or the
    /// hint, whichever comes first. A notification may be spurious (poll finds nothing); one is
    /// never lost between the poll and the arming.
    pub fn poll_batch_notify(&self, now: Duration) -> Poll {
        let mut now = nanos(now);
        loop {
            let mut st = self.sink.lock();
            // Relaxed: see `kick`. Cleared under the sink lock, before looking at the state.
            self.word.fetch_and(!KICK, Ordering::Relaxed);
            if st.armed_idle {
                // Armed with nothing buffered: what we find now arrived after the arming.
                st.look = st.look.max(now);
                st.armed_idle = false;
            }
            let plan = match self.poll_locked(&mut st, now) {
                Step::Ready(b) => return Poll::Ready(b),
                Step::Closed => return Poll::Closed,
                Step::Wait(plan) => plan,
            };
            let hint = self.wait_hint(&st, plan, now);
            // Relaxed: the baseline for the threshold; the fetch_or below re-validates it.
            let w0 = Word(self.word.load(Ordering::Relaxed));
            if self.pending(w0).0 > st.held_messages()
                && matches!(plan, Plan::Idle | Plan::Linger(_))
            {
                // A producer reserved but has not published yet (it is a few instructions away,
                // and its push may not look at SLEEPING): poll again very soon.
                return Poll::Wait(Some(
                    hint.map_or(UNPUBLISHED_RECHECK, |h| h.min(UNPUBLISHED_RECHECK)),
                ));
            }
            let threshold = self.park_threshold(&st, plan, w0);
            st.armed_idle = plan == Plan::Idle;
            drop(st);
            {
                let _guard = self.wake_lock.lock();
                // Relaxed: published by the Release fetch_or below (edge W1).
                self.wake_at.store(threshold.0, Ordering::Relaxed);
                // Relaxed: published by the Release fetch_or below (edge W3).
                self.armed.store(true, Ordering::Relaxed);
                // Release: edges W1 and W3. Reading the latest value, it also sees every KICK,
                // phase change and reservation that came before it.
                let w1 = Word(self.word.fetch_or(SLEEPING, Ordering::Release));
                if !(w1.has(KICK) || w1.phase() != w0.phase() || threshold.reached_by(w1)) {
                    return Poll::Wait(hint);
                }
                // Something changed while we looked: withdraw the arming and look again.
                // Relaxed: we only withdraw our own flags.
                self.armed.store(false, Ordering::Relaxed);
                self.word.fetch_and(!SLEEPING, Ordering::Relaxed);
            }
            now = self.now_ns().max(now);
        }
    }

    /// The wake threshold of a sink that parks (or arms) with `plan`, given the word `w0`.
    pub(super) fn park_threshold(&self, st: &Sink, plan: Plan, w0: Word) -> Threshold {
        match plan {
            Plan::Idle => Threshold::after(w0, 1, None),
            Plan::Linger(_) => Threshold::after(
                w0,
                (self.limits.max_messages - st.ready.len()) as u64,
                Some(self.limits.max_bytes - st.ready_bytes),
            ),
            Plan::Blocked | Plan::Emit(..) => Threshold::NEVER_BY_PUSH,
        }
    }

    pub(super) fn wait_hint(&self, st: &Sink, plan: Plan, now: u64) -> Option<Duration> {
        let due = match plan {
            Plan::Linger(due) => Some(due),
            _ => None,
        };
        let due = match (due, st.drain_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        due.map(|d| Duration::from_nanos(d.saturating_sub(now)))
    }

    pub(super) fn poll_locked(&self, st: &mut Sink, now: u64) -> Step {
        if st.report.is_some() {
            return Step::Closed;
        }
        if st.drain_deadline.is_some() {
            st.drain(&self.ring, &self.word, now);
            if self.try_finish(st, now).is_some() {
                return Step::Closed;
            }
        } else {
            // Only as much as the next decision needs: the batch and the message after it.
            st.drain_up_to(&self.ring, &self.word, now, self.limits.max_messages);
        }
        match st.plan(now, &self.limits) {
            Plan::Emit(n, trigger) => Step::Ready(st.emit(n, trigger, self.owner, &self.ring)),
            plan => Step::Wait(plan),
        }
    }

    /// Blocks up to `timeout` (real time) for a batch.
    pub fn next_batch(&self, timeout: Duration) -> Result<Batch, TakeError> {
        let end = Instant::now().checked_add(timeout);
        let mut woke_from_idle = false;
        // Rounds of spinning/yielding since the ring last delivered something (bounded).
        let mut idle_rounds = 0u32;
        loop {
            let now = self.now_ns();
            let mut st = self.sink.lock();
            let received_before = st.next_seq;
            // Relaxed: see `kick`. Cleared under the sink lock, before looking at the state.
            self.word.fetch_and(!KICK, Ordering::Relaxed);
            if woke_from_idle {
                // Parked with nothing buffered, we were woken by the first push: what we find
                // now arrived during the wake-up, not before we parked.
                st.look = st.look.max(now);
                woke_from_idle = false;
            }
            let plan = match self.poll_locked(&mut st, now) {
                Step::Ready(b) => return Ok(b),
                Step::Closed => return Err(TakeError::Closed),
                Step::Wait(plan) => plan,
            };
            let left = match end {
                Some(end) => end.saturating_duration_since(Instant::now()),
                None => Duration::MAX,
            };
            if left.is_zero() {
                return Err(TakeError::Timeout);
            }
            // Messages are flowing: look again shortly instead of parking, so a steady stream
            // fills batches without a futex round-trip per batch. Bounded: after SPIN_ROUNDS
            // looks that found nothing new, park.
            if st.next_seq != received_before {
                idle_rounds = 0;
            }
            if idle_rounds < SPIN_ROUNDS && matches!(plan, Plan::Linger(_) | Plan::Idle) {
                drop(st);
                if idle_rounds < 4 {
                    for _ in 0..(16u32 << idle_rounds) {
                        crate::sync::spin_hint();
                    }
                } else {
                    crate::sync::yield_now();
                }
                idle_rounds += 1;
                continue;
            }
            let mut nap = left;
            if let Some(d) = self.wait_hint(&st, plan, now) {
                nap = nap.min(d);
            }
            if !self.system_clock {
                nap = nap.min(MANUAL_CLOCK_SLICE);
            }
            // Relaxed: the baseline for the threshold; the fetch_or below re-validates it.
            let w0 = Word(self.word.load(Ordering::Relaxed));
            if self.pending(w0).0 > st.held_messages()
                && matches!(plan, Plan::Idle | Plan::Linger(_))
            {
                // A producer reserved but has not published yet: it is a few instructions away.
                drop(st);
                Backoff::new().snooze();
                continue;
            }
            let threshold = self.park_threshold(&st, plan, w0);
            drop(st);
            let mut guard = self.wake_lock.lock();
            // Relaxed: published by the Release fetch_or below (edge W1).
            self.wake_at.store(threshold.0, Ordering::Relaxed);
            // Release: edge W1 (the threshold store happens-before a producer's Acquire CAS
            // that sees SLEEPING). Reading the latest value, it also sees every KICK, phase
            // change and reservation that came before it.
            let w1 = Word(self.word.fetch_or(SLEEPING, Ordering::Release));
            if w1.has(KICK) || w1.phase() != w0.phase() || threshold.reached_by(w1) {
                // Relaxed: we only withdraw our own flag.
                self.word.fetch_and(!SLEEPING, Ordering::Relaxed);
                continue;
            }
            self.wake_cv.wait_for(&mut guard, nap);
            // Relaxed: as above.
            self.word.fetch_and(!SLEEPING, Ordering::Relaxed);
            woke_from_idle = plan == Plan::Idle;
        }
    }

    /// Acknowledges a delivered batch: its messages are delivered, its capacity released, and
    /// (with a flush link) the highest offset that is now safe is reported. A link failure is
    /// returned as [`AckError::Link`] after the batch is already counted delivered.
    pub fn ack(&self, batch: Batch) -> Result<(), AckError> {
        self.resolve(batch, Outcome::Delivered)
    }

    /// Gives a batch back: with `requeue`, its messages return ahead of newer ones, in order;
    /// without, they are failed (a terminal state: counted, and no longer held).
    pub fn nack(&self, batch: Batch, requeue: bool) -> Result<(), AckError> {
        self.resolve(
            batch,
            if requeue {
                Outcome::Requeue
            } else {
                Outcome::Failed
            },
        )
    }

    pub(super) fn resolve(&self, batch: Batch, outcome: Outcome) -> Result<(), AckError> {
        let now = self.now_ns();
        let mut st = self.sink.lock();
        let landed = if batch.owner == self.owner {
            st.land(&batch)
        } else {
            None
        };
        let Some(f) = landed else {
            st.counters.late_acks += 1;
            return Err(AckError::NotInFlight(batch));
        };
        // The sink's reference to the shared messages goes first, so a requeue can move them.
        drop(batch);
        match outcome {
            Outcome::Delivered => {
                st.counters.delivered += f.messages;
                self.release(f.messages, f.bytes);
                if self.link.is_some() {
                    if let Some(h) = f.highest {
                        st.acked_unreported.insert(f.max_seq, h);
                    }
                }
            }
            Outcome::Failed => {
                st.counters.failed += f.messages;
                self.release(f.messages, f.bytes);
            }
            Outcome::Requeue => st.requeue(f),
        }
        let report = if self.link.is_some() {
            st.link_offset()
        } else {
            None
        };
        if st.drain_deadline.is_some() {
            st.drain(&self.ring, &self.word, now);
            self.try_finish(&mut st, now);
        }
        if st.progress_waiters > 0 {
            self.progress.notify_all();
        }
        drop(st);
        self.kick();
        match (report, &self.link) {
            (Some(offset), Some(link)) => link.flushed(offset, now / 1_000_000).map_err(|e| {
                // Relaxed: a statistic.
                self.link_errors.fetch_add(1, Ordering::Relaxed);
                AckError::Link(e)
            }),
            _ => Ok(()),
        }
    }
}
