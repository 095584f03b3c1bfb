//! The producer side of [`BatchBuffer`]: admission, the reservation CAS, publication, and the
//! wake-ups producers owe a parked sink; plus the capacity release the sink side calls.
use std::time::{Duration, Instant};

use super::ring::Meta;
use super::word::{KICK, PRODUCER_WAITING, Phase, SLEEPING, Threshold, Word};
use super::*;
use crate::Offset;
use crate::sync::Ordering;

impl BatchBuffer {
    /// Accepts a message without blocking, or hands it back with the reason.
    #[inline]
    pub fn try_push(&self, payload: Vec<u8>, offset: Option<Offset>) -> Result<(), PushError> {
        self.push_message(Message { payload, offset })
    }

    /// Like [`try_push`](Self::try_push), for a [`Message`].
    #[inline]
    pub fn push_message(&self, message: Message) -> Result<(), PushError> {
        match self.push_one(&message.payload, message.offset) {
            Ok(()) => Ok(()),
            Err(refused) => Err(self.refuse(refused, message)),
        }
    }

    /// Accepts a copy of `payload` without blocking (the caller keeps its bytes), or says why
    /// not. The fast path: one CAS on the state word (phase, capacity and the reservation of a
    /// ring slot and arena bytes), one copy into the arena, one slot publication.
    #[inline]
    pub fn try_push_slice(
        &self,
        payload: &[u8],
        offset: Option<Offset>,
    ) -> Result<(), PushRefusal> {
        self.push_one(payload, offset).map_err(|refused| {
            self.count_refusals(&refused, 1);
            refused.reason()
        })
    }

    /// Accepts a message, waiting up to `timeout` (real time) while the buffer is full.
    pub fn push_timeout(
        &self,
        payload: Vec<u8>,
        offset: Option<Offset>,
        timeout: Duration,
    ) -> Result<(), PushError> {
        let message = Message { payload, offset };
        match self.push_slice_timeout_inner(&message.payload, message.offset, timeout) {
            Ok(()) => Ok(()),
            Err(refused) => Err(self.refuse(refused, message)),
        }
    }

    /// Like [`try_push_slice`](Self::try_push_slice), waiting up to `timeout` (real time) while
    /// the buffer is full.
    pub fn push_slice_timeout(
        &self,
        payload: &[u8],
        offset: Option<Offset>,
        timeout: Duration,
    ) -> Result<(), PushRefusal> {
        self.push_slice_timeout_inner(payload, offset, timeout)
            .map_err(|refused| {
                self.count_refusals(&refused, 1);
                refused.reason()
            })
    }

    pub(super) fn push_slice_timeout_inner(
        &self,
        payload: &[u8],
        offset: Option<Offset>,
        timeout: Duration,
    ) -> Result<(), Refused> {
        // Try first: the common case reads no clock.
        match self.push_one(payload, offset) {
            Err(Refused::Full) => {}
            done => return done,
        }
        let len = payload.len() as u64;
        let end = Instant::now().checked_add(timeout);
        let mut rounds = 0u32;
        loop {
            match self.push_one(payload, offset) {
                Err(Refused::Full) => {}
                done => return done,
            }
            // The sink frees a batch at a time: yield a few times before parking (bounded).
            if rounds < SPIN_ROUNDS {
                rounds += 1;
                crate::sync::yield_now();
                continue;
            }
            let left = match end {
                Some(end) => end.saturating_duration_since(Instant::now()),
                None => Duration::MAX,
            };
            if left.is_zero() {
                return Err(Refused::Full);
            }
            let mut guard = self.space_lock.lock();
            // Acquire: edge W4 (see `release`). Either a releaser's `fetch_and` sees our flag
            // (and notifies under `space_lock`, which we hold until parked), or this RMW reads
            // from it and the `released` store before it is visible to the load below.
            let now = Word(self.word.fetch_or(PRODUCER_WAITING, Ordering::Acquire));
            // Acquire: edge R3 (as in `push_one`).
            let released = Word(self.released.load(Ordering::Acquire));
            if now.phase() != Phase::Running || self.fits(now, released, 1, len) {
                continue;
            }
            self.space_cv.wait_for(&mut guard, left);
        }
    }

    /// Accepts the longest prefix of `messages` that fits (one reservation for all of it);
    /// hands back the rest, in order, with the reason the first of them was refused.
    pub fn push_many(&self, mut messages: Vec<Message>) -> Result<(), PushManyError> {
        match self.push_many_inner(&messages, |m| (&m.payload, m.offset)) {
            Ok(()) => Ok(()),
            Err((refused, accepted)) => {
                let rest = messages.split_off(accepted);
                Err(self.refuse_many(refused, accepted, rest))
            }
        }
    }

    /// Accepts copies of the longest prefix of `messages` that fits (one reservation for all
    /// of it; the caller keeps every byte). Returns how many were accepted and, when not all
    /// were, why the first one left was refused.
    pub fn push_refs(&self, messages: &[MessageRef<'_>]) -> (usize, Option<PushRefusal>) {
        match self.push_many_inner(messages, |m| (m.payload, m.offset)) {
            Ok(()) => (messages.len(), None),
            Err((refused, accepted)) => {
                self.count_refusals(&refused, (messages.len() - accepted) as u64);
                (accepted, Some(refused.reason()))
            }
        }
    }

    /// The shared part of `push_many` and `push_refs`: `Err((reason, accepted))` when only the
    /// first `accepted` were taken.
    pub(super) fn push_many_inner<T>(
        &self,
        items: &[T],
        get: impl Fn(&T) -> (&[u8], Option<Offset>),
    ) -> Result<(), (Refused, usize)> {
        if items.is_empty() {
            return Ok(());
        }
        let lim = &self.limits;
        let too_large = |i: usize| get(&items[i]).0.len() as u64 > lim.capacity_bytes;
        if too_large(0) {
            return Err((Refused::TooLarge, 0));
        }
        if !self.ring.ready() {
            return Err((Refused::Full, 0));
        }
        // Acquire: edge R3 (see `push_one`).
        let mut released = Word(self.released.load(Ordering::Acquire));
        // Relaxed: the CAS below validates the value; see `push_one` for its ordering.
        let mut cur = Word(self.word.load(Ordering::Relaxed));
        let (k, bytes) = loop {
            match cur.phase() {
                Phase::Running => {}
                Phase::Draining => return Err((Refused::Stopping, 0)),
                Phase::Closed => return Err((Refused::Closed, 0)),
            }
            let (mut k, mut bytes) = (0u64, 0u64);
            for m in items {
                let len = get(m).0.len() as u64;
                if !self.fits(cur, released, k + 1, bytes + len) {
                    break;
                }
                k += 1;
                bytes += len;
            }
            if k == 0 {
                // Acquire: edge R3. A stale `released` only under-counts what was freed: look
                // at the latest before refusing.
                let latest = Word(self.released.load(Ordering::Acquire));
                if latest != released {
                    released = latest;
                    continue;
                }
                return Err((Refused::Full, 0));
            }
            // Acquire on success: as in `push_one` (edge W1, the wake threshold).
            match self.word.compare_exchange_weak(
                cur.0,
                cur.plus(k, bytes).0,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => break (k, bytes),
                Err(v) => cur = Word(v),
            }
        };
        let (mut ticket, mut pos) = (cur.messages(), cur.bytes());
        for m in &items[..k as usize] {
            let (payload, offset) = get(m);
            let len = payload.len() as u64;
            // SAFETY: the CAS above reserved `k` tickets from `cur.messages()` and `bytes` bytes
            // from `cur.bytes()` within the capacities; each message gets the next ones, in
            // order, after `ready()` allocated the ring.
            unsafe {
                self.ring
                    .publish(ticket, pos, payload, Meta { len, offset })
            };
            ticket += 1;
            pos += len;
        }
        if cur.has(SLEEPING) {
            self.wake_sink_if_due(cur.plus(k, bytes));
        }
        let k = k as usize;
        if k == items.len() {
            Ok(())
        } else if too_large(k) {
            Err((Refused::TooLarge, k))
        } else {
            Err((Refused::Full, k))
        }
    }

    /// True when `messages` more messages and `bytes` more bytes fit beside everything
    /// accepted and not yet released.
    #[inline]
    pub(super) fn fits(&self, w: Word, released: Word, messages: u64, bytes: u64) -> bool {
        let (m, b) = w.pending_since(released);
        m + messages <= self.limits.capacity_messages && b + bytes <= self.limits.capacity_bytes
    }

    /// The push fast path: one CAS (phase, capacity, reservation), one arena copy, one slot.
    #[inline]
    pub(super) fn push_one(&self, payload: &[u8], offset: Option<Offset>) -> Result<(), Refused> {
        let len = payload.len() as u64;
        if len > self.limits.capacity_bytes {
            return Err(Refused::TooLarge);
        }
        if !self.ring.ready() {
            return Err(Refused::Full);
        }
        // Acquire: edge R3 (the sink copied out every released payload before publishing
        // `released`, so the arena bytes our reservation may reuse are no longer read).
        let mut released = Word(self.released.load(Ordering::Acquire));
        // Relaxed: only a first guess for the CAS, which re-reads the latest value.
        let mut cur = Word(self.word.load(Ordering::Relaxed));
        loop {
            match cur.phase() {
                Phase::Running => {}
                Phase::Draining => return Err(Refused::Stopping),
                Phase::Closed => return Err(Refused::Closed),
            }
            if !self.fits(cur, released, 1, len) {
                // Acquire: edge R3. A stale `released` only under-counts what was freed: look
                // at the latest before refusing.
                let latest = Word(self.released.load(Ordering::Acquire));
                if latest != released {
                    released = latest;
                    continue;
                }
                return Err(Refused::Full);
            }
            // Success Acquire: edge W1. If the value we replace has SLEEPING, we read from the
            // release sequence headed by the sink's `fetch_or(SLEEPING, Release)`, so its store
            // of `wake_at` is visible to `wake_sink_if_due`. Admission itself needs no fence:
            // the phase and the positions are in this one word, so this RMW is ordered against
            // the stop's phase change in the word's modification order.
            match self.word.compare_exchange_weak(
                cur.0,
                cur.plus(1, len).0,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(v) => cur = Word(v),
            }
        }
        // SAFETY: the CAS reserved ticket `cur.messages()` and bytes from `cur.bytes()` within
        // the capacities, after `ready()` allocated the ring.
        unsafe {
            self.ring
                .publish(cur.messages(), cur.bytes(), payload, Meta { len, offset })
        };
        if cur.has(SLEEPING) {
            self.wake_sink_if_due(cur.plus(1, len));
        }
        Ok(())
    }

    #[cold]
    pub(super) fn refuse(&self, refused: Refused, message: Message) -> PushError {
        self.count_refusals(&refused, 1);
        PushError {
            reason: refused.reason(),
            message,
        }
    }

    #[cold]
    pub(super) fn refuse_many(
        &self,
        refused: Refused,
        accepted: usize,
        rest: Vec<Message>,
    ) -> PushManyError {
        self.count_refusals(&refused, rest.len() as u64);
        PushManyError {
            reason: refused.reason(),
            accepted,
            rest,
        }
    }

    pub(super) fn count_refusals(&self, refused: &Refused, n: u64) {
        let r = &self.refusals;
        let counter = match refused {
            Refused::Full => &r.full,
            Refused::Stopping => &r.stopping,
            Refused::Closed => &r.closed,
            Refused::TooLarge => &r.too_large,
        };
        // Relaxed: a statistic.
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// A push saw the sink parked: wake it if this push reached its threshold.
    #[cold]
    pub(super) fn wake_sink_if_due(&self, after: Word) {
        // Relaxed: ordered after the sink's store by edge W1 (our Acquire CAS); a newer
        // threshold is from a later parking, which re-checks the counts itself.
        let threshold = Threshold(self.wake_at.load(Ordering::Relaxed));
        if threshold.reached_by(after) {
            self.wake_sink();
        }
    }

    /// Clears SLEEPING and, if it was set, wakes the parked sink.
    pub(super) fn wake_sink(&self) {
        // Acquire: edge W3 (below). The condvar handshake itself is ordered by `wake_lock`
        // (the sink holds it from setting SLEEPING until it is parked); the data the sink will
        // read is published by the ring (R1) or the sink mutex.
        let prev = Word(self.word.fetch_and(!SLEEPING, Ordering::Acquire));
        if prev.has(SLEEPING) {
            {
                let _guard = self.wake_lock.lock();
                self.wake_cv.notify_all();
            }
            // Edge W3: an arming sink stores `armed` before its Release `fetch_or(SLEEPING)`;
            // our Acquire RMW above read that SLEEPING (or a later value in its release
            // sequence), so the store is visible and one of the wakers calls the notifier.
            if self.armed.swap(false, Ordering::Relaxed) {
                self.notify();
            }
        }
    }

    /// Calls the notifier (outside every internal lock but its own slot's).
    #[cold]
    pub(super) fn notify(&self) {
        let f = self.notifier.lock().clone();
        if let Some(f) = f {
            f();
        }
    }

    /// Tells a sink about to park that sink-side state changed (call after unlocking `sink`).
    pub(super) fn kick(&self) {
        // Relaxed: the change itself is published by the sink mutex; KICK only has to be
        // ordered against the sink's clear-then-park, which the word's modification order does.
        let prev = Word(self.word.fetch_or(KICK, Ordering::Relaxed));
        if prev.has(SLEEPING) {
            self.wake_sink();
        }
    }

    /// Returns capacity of messages that reached a terminal state; wakes blocked producers.
    /// Called under the sink mutex (the only writer of `released`), after the messages'
    /// payloads were copied out of the arena.
    pub(super) fn release(&self, messages: u64, bytes: u64) {
        if messages == 0 {
            return;
        }
        // Relaxed: we are the only writer (sink mutex).
        let cur = Word(self.released.load(Ordering::Relaxed));
        // Release: edge R3 (our copy-outs happen-before a producer reuses the bytes).
        self.released
            .store(cur.plus(messages, bytes).0, Ordering::Release);
        // AcqRel: edge W4. A producer about to park sets PRODUCER_WAITING with an Acquire RMW
        // and then reads `released`: if its RMW comes first in the word's modification order we
        // see the flag here and notify; otherwise it reads from this Release RMW, so our store
        // above is visible to it. Per batch, not per message.
        let prev = Word(self.word.fetch_and(!PRODUCER_WAITING, Ordering::AcqRel));
        if prev.has(PRODUCER_WAITING) {
            let _guard = self.space_lock.lock();
            self.space_cv.notify_all();
        }
    }

    /// What is accepted and not yet released: `(messages, bytes)` (under the sink mutex, the
    /// exact count; elsewhere a snapshot).
    pub(super) fn pending(&self, w: Word) -> (u64, u64) {
        // Acquire: pairs with `release` (a snapshot consistent with the sink side's counts
        // when read under the sink mutex).
        w.pending_since(Word(self.released.load(Ordering::Acquire)))
    }

    /// CAS loop on the state word for the sink side (rare: per batch, per stop); wakes blocked
    /// producers if the flag was set.
    pub(super) fn update_word(&self, f: impl Fn(Word) -> Word) -> Word {
        // Relaxed throughout: capacity carries no data (slot reuse is guarded by the ring's
        // stamps, R2), and the producer-waiting handshake is ordered by `space_lock`.
        let mut cur = Word(self.word.load(Ordering::Relaxed));
        loop {
            let new = f(cur);
            match self.word.compare_exchange_weak(
                cur.0,
                new.0,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(v) => cur = Word(v),
            }
        }
        if cur.has(PRODUCER_WAITING) {
            let _guard = self.space_lock.lock();
            self.space_cv.notify_all();
        }
        cur
    }
}
