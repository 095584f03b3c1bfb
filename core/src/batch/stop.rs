//! Flush, stop and the stop report of [`BatchBuffer`].
use std::sync::Arc;
use std::time::Duration;

use super::sink::Sink;
use super::types::nanos;
use super::word::{PRODUCER_WAITING, Phase, Word};
use super::*;
use crate::sync::{Backoff, MutexGuard, Ordering};

impl BatchBuffer {
    /// Emits everything buffered now, ignoring linger, and waits until all of it is acked or
    /// failed, or until `deadline` (on the buffer's clock). Needs a sink running on another
    /// thread (or use it with a deadline of `now()` to only mark the messages as due).
    pub fn flush(&self, deadline: Duration) -> Result<(), FlushError> {
        let deadline = nanos(deadline);
        let target = {
            let mut st = self.sink.lock();
            if st.report.is_some() {
                return Err(FlushError::Closed);
            }
            st.drain(&self.ring, &self.word, self.now_ns());
            // Relaxed: every reservation that happens-before this call is visible (coherence);
            // concurrent ones may or may not be included, as for any concurrent push.
            let w = Word(self.word.load(Ordering::Relaxed));
            let target = st.next_seq + (self.pending(w).0 - st.held_messages());
            st.flush_target = st.flush_target.max(target);
            target
        };
        self.kick();
        let mut backoff = Backoff::new();
        loop {
            let now = self.now_ns();
            let mut st = self.sink.lock();
            st.drain(&self.ring, &self.word, now);
            if st.low_water() >= target {
                return Ok(());
            }
            if st.report.is_some() {
                return Err(FlushError::Closed);
            }
            if now >= deadline {
                return Err(FlushError::Timeout);
            }
            if st.next_seq < target && st.ready.is_empty() && st.in_flight.is_empty() {
                // Only unpublished reservations are missing: they are moments away.
                drop(st);
                backoff.snooze();
                continue;
            }
            self.wait_progress(&mut st, deadline - now);
        }
    }

    pub(super) fn wait_progress(&self, st: &mut MutexGuard<'_, Sink>, left: u64) {
        let mut nap = Duration::from_nanos(left);
        if !self.system_clock {
            nap = nap.min(MANUAL_CLOCK_SLICE);
        }
        st.progress_waiters += 1;
        self.progress.wait_for(st, nap);
        st.progress_waiters -= 1;
    }

    /// Starts a stop without waiting: closes admission first, then lets the sink drain
    /// everything at once, until all is resolved or `deadline` (on the buffer's clock; the
    /// earliest of several stops wins). Follow with [`poll_stop`](Self::poll_stop).
    pub fn begin_stop(&self, deadline: Duration) {
        let deadline = nanos(deadline);
        // Admission first: after this RMW no push can reserve (edge W2: the drain that later
        // sees Draining, through the sink mutex, reads counts that include every accepted push).
        let cur = Word(self.word.load(Ordering::Relaxed));
        if cur.phase() == Phase::Running {
            self.update_word(|w| {
                if w.phase() == Phase::Running {
                    Word(w.with_phase(Phase::Draining).0 & !PRODUCER_WAITING)
                } else {
                    w
                }
            });
        }
        {
            let mut st = self.sink.lock();
            if st.report.is_none() {
                st.drain_deadline = Some(st.drain_deadline.map_or(deadline, |d| d.min(deadline)));
            }
            if st.progress_waiters > 0 {
                self.progress.notify_all();
            }
        }
        self.kick();
    }

    /// Non-blocking: the stop report once the stop has finished, `None` while it is draining
    /// (or if no stop has begun). `now` is on the buffer's clock.
    pub fn poll_stop(&self, now: Duration) -> Option<Arc<StopReport>> {
        let now = nanos(now);
        let mut st = self.sink.lock();
        if let Some(r) = &st.report {
            return Some(Arc::clone(r));
        }
        st.drain_deadline?;
        st.drain(&self.ring, &self.word, now);
        let report = self.try_finish(&mut st, now);
        drop(st);
        if report.is_some() {
            self.kick(); // an armed or parked sink learns that the buffer closed
        }
        report
    }

    /// Stops: closes admission, emits everything queued at once, gives batches in flight until
    /// `deadline` (on the buffer's clock) to be acked, then hands back the rest. Every caller
    /// gets the same report. Needs the sink running on another thread to deliver anything;
    /// without one, everything is handed back at the deadline.
    pub fn stop(&self, deadline: Duration) -> Arc<StopReport> {
        self.begin_stop(deadline);
        let mut backoff = Backoff::new();
        loop {
            let now = self.now_ns();
            let mut st = self.sink.lock();
            if let Some(r) = &st.report {
                return Arc::clone(r);
            }
            st.drain(&self.ring, &self.word, now);
            if let Some(r) = self.try_finish(&mut st, now) {
                drop(st);
                self.kick(); // an armed or parked sink learns that the buffer closed
                return r;
            }
            // Relaxed: see `try_finish`.
            let w = Word(self.word.load(Ordering::Relaxed));
            if self.pending(w).0 > st.held_messages() {
                drop(st);
                backoff.snooze();
                continue;
            }
            let deadline = st.drain_deadline.unwrap_or(now);
            self.wait_progress(&mut st, deadline.saturating_sub(now).max(1));
        }
    }

    /// Closes if the drain is complete or its deadline passed (and no push is mid-publish).
    pub(super) fn try_finish(&self, st: &mut Sink, now: u64) -> Option<Arc<StopReport>> {
        if let Some(r) = &st.report {
            return Some(Arc::clone(r));
        }
        let deadline = st.drain_deadline?;
        // Relaxed: the phase change to Draining happens-before this load (its RMW precedes the
        // `drain_deadline` write, which we read under the sink mutex), so by coherence this
        // load sees every reservation admitted before it (edge W2). Afterwards counts only
        // drop, and only under the sink mutex, which we hold.
        let w = Word(self.word.load(Ordering::Relaxed));
        if self.pending(w).0 > st.held_messages() {
            return None; // an accepted push is still publishing: never finish without it
        }
        let resolved = st.ready.is_empty() && st.in_flight.is_empty();
        if !resolved && now < deadline {
            return None;
        }
        let (messages, bytes) = (st.held_messages(), st.held_bytes());
        let report = st.finish(now, &self.ring);
        // After the hand-back copied the payloads out (edge R3), then the phase.
        self.release(messages, bytes);
        self.update_word(|w| Word(w.with_phase(Phase::Closed).0 & !PRODUCER_WAITING));
        self.progress.notify_all();
        Some(report)
    }

    /// Registers where the report goes if the buffer is dropped without a stop (a hand-back
    /// sink; replaces an earlier one). It runs on the dropping thread.
    pub fn on_drop(&self, hand_back: impl FnOnce(Arc<StopReport>) + Send + 'static) {
        self.drop_slot.lock().hand_back = Some(Box::new(hand_back));
    }

    /// A handle that receives the report if the buffer is dropped without a stop (and no
    /// [`on_drop`](Self::on_drop) sink is set).
    pub fn drop_report(&self) -> DropReport {
        DropReport(Arc::clone(&self.drop_slot))
    }

    /// Counters and gauges.
    pub fn stats(&self) -> BatchStats {
        let st = self.sink.lock();
        // Relaxed: a snapshot; under the sink mutex it is consistent with the sink side.
        let w = Word(self.word.load(Ordering::Relaxed));
        let mut s = st.stats();
        let (pending_messages, pending_bytes) = self.pending(w);
        let unpublished = pending_messages.saturating_sub(st.held_messages());
        s.accepted = st.next_seq + unpublished;
        s.queued_messages = pending_messages.saturating_sub(st.in_flight_messages);
        s.queued_bytes = pending_bytes.saturating_sub(st.in_flight_bytes);
        // Relaxed: statistics.
        let r = &self.refusals;
        s.rejected_full = r.full.load(Ordering::Relaxed);
        s.rejected_stopping = r.stopping.load(Ordering::Relaxed);
        s.rejected_closed = r.closed.load(Ordering::Relaxed);
        s.rejected_too_large = r.too_large.load(Ordering::Relaxed);
        s.link_errors = self.link_errors.load(Ordering::Relaxed);
        s
    }
}
