//! Batch buffers: many producers, one sink, size/bytes/linger triggers, bounded memory, and a
//! shutdown that drains everything or hands it back (docs/CONTRACT.md §5).
//!
//! ```
//! use std::time::Duration;
//! use tidemark::batch::{BatchBuffer, BatchConfig};
//!
//! let mut config = BatchConfig::default();
//! config.max_messages = 2;
//! let buffer = BatchBuffer::new(config).unwrap();
//! buffer.try_push(b"a".to_vec(), None).unwrap();
//! buffer.try_push(b"b".to_vec(), None).unwrap();
//! let batch = buffer.next_batch(Duration::from_secs(1)).unwrap();
//! assert_eq!(batch.len(), 2);
//! buffer.ack(batch).unwrap();
//! let report = buffer.stop(buffer.now() + Duration::from_secs(1));
//! assert_eq!((report.accepted, report.delivered), (2, 2));
//! ```
//!
//! # Structure
//!
//! - Producers (any thread, lock-free): one CAS on the state word (`word.rs`) checks the phase
//!   and reserves message and byte capacity together; a ticket from the ring (`ring.rs`) and one
//!   slot write publish the message. No lock, no clock read, no allocation.
//! - The sink side (one at a time) holds a mutex over the sink state (`sink.rs`): it drains the
//!   ring, stamps arrivals, plans batches, tracks batches in flight, and finishes the stop.
//! - Capacity is released only at a terminal state (ack, nack without requeue, hand-back), so
//!   `capacity_*` bounds everything accepted and unresolved, including batches in flight.
//!
//! See `docs/ARCHITECTURE.md` ("Batch buffer") and `docs/MEMORY_ORDERING.md`.
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::Offset;
use crate::sync::{AtomicBool, AtomicU64, CachePadded, Condvar, Mutex, MutexGuard, Ordering};

mod link;
mod reference;
mod ring;
mod sink;
mod types;
mod word;

pub use link::TrackerLink;
pub use reference::{RefPoll, RefReport, ReferenceBatcher};
pub use types::{
    AckError, Batch, BatchConfig, BatchId, BatchStats, Clock, ConfigError, FlushError, FlushLink,
    HandedBack, LinkError, ManualClock, Message, MessageDesc, MessageRef, Poll, PushError,
    PushManyError, PushRefusal, StopReport, SystemClock, TakeError, Trigger,
};

use crate::sync::Backoff;
use ring::{Meta, Ring};
use sink::{Limits, Plan, Sink};
use types::nanos;
use word::{KICK, PRODUCER_WAITING, Phase, SLEEPING, Threshold, Word};

/// The lifecycle state (docs/CONTRACT.md §5).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// Accepting pushes.
    Running,
    /// Stopping: admission closed, draining until everything is resolved or the deadline.
    Draining,
    /// Closed: the stop report exists.
    Closed,
}

/// Longest single sleep of a blocking call when the clock is not the system clock (an injected
/// clock can jump, so blocked callers re-read it at least this often).
const MANUAL_CLOCK_SLICE: Duration = Duration::from_millis(2);

/// How many times a sink that found nothing new looks again (spinning, then yielding) before it
/// parks in `next_batch`.
/// (Under loom, one round: the models check the park handshake, not the spinning.)
const SPIN_ROUNDS: u32 = if crate::sync::LOOM { 1 } else { 12 };

/// How soon `poll_batch_notify` asks to be called again when a producer has reserved but not
/// yet published (a window of a few instructions, unless that thread was descheduled).
const UNPUBLISHED_RECHECK: Duration = Duration::from_micros(50);

/// A bounded, multi-producer, single-sink batch buffer (docs/CONTRACT.md §5).
///
/// Share it by reference or in an `Arc`. Producers call [`try_push`](Self::try_push),
/// [`push_timeout`](Self::push_timeout) or [`push_many`](Self::push_many) from any thread; one
/// sink at a time calls [`next_batch`](Self::next_batch) or [`poll_batch`](Self::poll_batch),
/// then [`ack`](Self::ack) or [`nack`](Self::nack). [`stop`](Self::stop) (or dropping the buffer)
/// accounts for every accepted message: delivered, failed, or handed back in the report.
pub struct BatchBuffer {
    /// The state word: phase, wake flags, reservation positions (see [`word`]).
    word: CachePadded<AtomicU64>,
    /// Positions of what reached a terminal state (a [`Word`] without flags): written by the
    /// sink side under its mutex, read by producers for the capacity check.
    released: CachePadded<AtomicU64>,
    ring: Ring,
    limits: Limits,
    sink: Mutex<Sink>,
    /// Paired with `sink`: flush and stop waiters, notified on acks, nacks and close.
    progress: Condvar,
    /// The parked sink's wake threshold (a [`Threshold`]), read by producers that see SLEEPING.
    /// (Cold like the fields around it: unpadded, so a mostly idle buffer stays small.)
    wake_at: AtomicU64,
    wake_lock: Mutex<()>,
    wake_cv: Condvar,
    space_lock: Mutex<()>,
    space_cv: Condvar,
    /// Refused pushes by reason (statistics only).
    refusals: Refusals,
    link_errors: AtomicU64,
    clock: Arc<dyn Clock>,
    system_clock: bool,
    link: Option<Arc<dyn FlushLink>>,
    drop_slot: Arc<Mutex<DropSlot>>,
    owner: usize,
    /// Called when an armed sink should look again (see [`BatchBuffer::poll_batch_notify`]).
    notifier: Mutex<Option<Notifier>>,
    /// A sink armed the notifier: whoever clears SLEEPING calls it (once per arming).
    armed: AtomicBool,
}

/// The callback of [`BatchBuffer::set_notifier`].
pub type Notifier = Arc<dyn Fn() + Send + Sync>;

impl fmt::Debug for BatchBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchBuffer")
            .field("state", &self.state())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct DropSlot {
    report: Option<Arc<StopReport>>,
    hand_back: Option<Box<dyn FnOnce(Arc<StopReport>) + Send>>,
}

/// Where the report of a buffer that was dropped without a stop ends up (see
/// [`BatchBuffer::drop_report`]).
#[derive(Clone)]
pub struct DropReport(Arc<Mutex<DropSlot>>);

impl DropReport {
    /// Takes the report, once the buffer was dropped (`None` before, or if already taken, or if a
    /// hand-back sink received it).
    pub fn take(&self) -> Option<Arc<StopReport>> {
        self.0.lock().report.take()
    }
}

impl fmt::Debug for DropReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DropReport").finish_non_exhaustive()
    }
}

/// Refused pushes by reason.
#[derive(Default)]
struct Refusals {
    full: AtomicU64,
    stopping: AtomicU64,
    closed: AtomicU64,
    too_large: AtomicU64,
}

/// A refused push, before counting.
enum Refused {
    Full,
    Stopping,
    Closed,
    TooLarge,
}

impl Refused {
    fn reason(&self) -> PushRefusal {
        match self {
            Refused::Full => PushRefusal::Full,
            Refused::Stopping => PushRefusal::Stopping,
            Refused::Closed => PushRefusal::Closed,
            Refused::TooLarge => PushRefusal::TooLarge,
        }
    }
}

impl BatchBuffer {
    /// A buffer with this configuration, or the first problem with it.
    pub fn new(config: BatchConfig) -> Result<BatchBuffer, ConfigError> {
        config.validate()?;
        let system_clock = config.clock.is_none();
        let clock: Arc<dyn Clock> = config.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let (ring, head) = Ring::new(config.capacity_messages, config.capacity_bytes);
        let drop_slot = Arc::new(Mutex::new(DropSlot::default()));
        // The buffer's identity (batches carry it): the address of an allocation it owns.
        let owner = Arc::as_ptr(&drop_slot) as usize;
        let now = nanos(clock.now());
        Ok(BatchBuffer {
            word: CachePadded::new(AtomicU64::new(0)),
            released: CachePadded::new(AtomicU64::new(0)),
            ring,
            limits: Limits {
                max_messages: config.max_messages,
                max_bytes: config.max_bytes,
                linger: nanos(config.linger),
                capacity_messages: config.capacity_messages as u64,
                capacity_bytes: config.capacity_bytes,
                max_inflight: config.max_inflight_batches,
            },
            sink: Mutex::new(Sink::new(head, now)),
            progress: Condvar::new(),
            wake_at: AtomicU64::new(Threshold::NEVER_BY_PUSH.0),
            wake_lock: Mutex::new(()),
            wake_cv: Condvar::new(),
            space_lock: Mutex::new(()),
            space_cv: Condvar::new(),
            refusals: Refusals::default(),
            link_errors: AtomicU64::new(0),
            clock,
            system_clock,
            link: config.flush_link,
            drop_slot,
            owner,
            notifier: Mutex::new(None),
            armed: AtomicBool::new(false),
        })
    }

    /// The buffer's clock (the time base of `poll_batch`, `flush` and `stop` deadlines).
    pub fn now(&self) -> Duration {
        self.clock.now()
    }

    fn now_ns(&self) -> u64 {
        nanos(self.clock.now())
    }

    /// The most payload bytes the buffer holds at once (`BatchConfig::capacity_bytes`): a
    /// message larger than this is never accepted.
    pub fn capacity_bytes(&self) -> u64 {
        self.limits.capacity_bytes
    }

    /// Bytes of the buffer's fixed parts: the buffer itself plus, once the first push
    /// allocated them, its ring slots and payload arena (about `capacity_messages` × 40 bytes
    /// plus `capacity_bytes` rounded up to a power of two). Batches in flight and staged
    /// bookkeeping are not included.
    pub fn memory_bytes(&self) -> u64 {
        std::mem::size_of::<Self>() as u64 + self.ring.allocated_bytes()
    }

    /// The most messages the buffer holds at once (`BatchConfig::capacity_messages`).
    pub fn capacity_messages(&self) -> u64 {
        self.limits.capacity_messages
    }

    /// Counts `messages` refused for `reason` by a front end before they reached the buffer
    /// (the C ABI refuses a message whose length can never fit before it copies any byte), so
    /// `stats` still counts every refusal.
    pub fn count_refused(&self, reason: PushRefusal, messages: u64) {
        let refused = match reason {
            PushRefusal::Full => Refused::Full,
            PushRefusal::Stopping => Refused::Stopping,
            PushRefusal::Closed => Refused::Closed,
            PushRefusal::TooLarge => Refused::TooLarge,
        };
        self.count_refusals(&refused, messages);
    }

    /// The lifecycle state.
    pub fn state(&self) -> State {
        // Relaxed: a snapshot for observers; it carries no data.
        match Word(self.word.load(Ordering::Relaxed)).phase() {
            Phase::Running => State::Running,
            Phase::Draining => State::Draining,
            Phase::Closed => State::Closed,
        }
    }

    // ---------------------------------------------------------------------------------------
    // Producers
    // ---------------------------------------------------------------------------------------

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

    fn push_slice_timeout_inner(
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
    fn push_many_inner<T>(
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
    fn fits(&self, w: Word, released: Word, messages: u64, bytes: u64) -> bool {
        let (m, b) = w.pending_since(released);
        m + messages <= self.limits.capacity_messages && b + bytes <= self.limits.capacity_bytes
    }

    /// The push fast path: one CAS (phase, capacity, reservation), one arena copy, one slot.
    #[inline]
    fn push_one(&self, payload: &[u8], offset: Option<Offset>) -> Result<(), Refused> {
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
    fn refuse(&self, refused: Refused, message: Message) -> PushError {
        self.count_refusals(&refused, 1);
        PushError {
            reason: refused.reason(),
            message,
        }
    }

    #[cold]
    fn refuse_many(&self, refused: Refused, accepted: usize, rest: Vec<Message>) -> PushManyError {
        self.count_refusals(&refused, rest.len() as u64);
        PushManyError {
            reason: refused.reason(),
            accepted,
            rest,
        }
    }

    fn count_refusals(&self, refused: &Refused, n: u64) {
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
    fn wake_sink_if_due(&self, after: Word) {
        // Relaxed: ordered after the sink's store by edge W1 (our Acquire CAS); a newer
        // threshold is from a later parking, which re-checks the counts itself.
        let threshold = Threshold(self.wake_at.load(Ordering::Relaxed));
        if threshold.reached_by(after) {
            self.wake_sink();
        }
    }

    /// Clears SLEEPING and, if it was set, wakes the parked sink.
    fn wake_sink(&self) {
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
    fn notify(&self) {
        let f = self.notifier.lock().clone();
        if let Some(f) = f {
            f();
        }
    }

    /// Tells a sink about to park that sink-side state changed (call after unlocking `sink`).
    fn kick(&self) {
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
    fn release(&self, messages: u64, bytes: u64) {
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
    fn pending(&self, w: Word) -> (u64, u64) {
        // Acquire: pairs with `release` (a snapshot consistent with the sink side's counts
        // when read under the sink mutex).
        w.pending_since(Word(self.released.load(Ordering::Acquire)))
    }

    /// CAS loop on the state word for the sink side (rare: per batch, per stop); wakes blocked
    /// producers if the flag was set.
    fn update_word(&self, f: impl Fn(Word) -> Word) -> Word {
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

    // ---------------------------------------------------------------------------------------
    // Sink
    // ---------------------------------------------------------------------------------------

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
    /// Linger deadlines are not notified: the `Wait` hint says when to poll again. So a sink
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
    fn park_threshold(&self, st: &Sink, plan: Plan, w0: Word) -> Threshold {
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

    fn wait_hint(&self, st: &Sink, plan: Plan, now: u64) -> Option<Duration> {
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

    fn poll_locked(&self, st: &mut Sink, now: u64) -> Step {
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

    fn resolve(&self, batch: Batch, outcome: Outcome) -> Result<(), AckError> {
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

    // ---------------------------------------------------------------------------------------
    // Flush and stop
    // ---------------------------------------------------------------------------------------

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

    fn wait_progress(&self, st: &mut MutexGuard<'_, Sink>, left: u64) {
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
    fn try_finish(&self, st: &mut Sink, now: u64) -> Option<Arc<StopReport>> {
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

enum Step {
    Ready(Batch),
    Wait(Plan),
    Closed,
}

#[derive(Clone, Copy)]
enum Outcome {
    Delivered,
    Failed,
    Requeue,
}

impl Drop for BatchBuffer {
    /// Dropping goes through the stop path with no grace: everything still held is handed back
    /// (batches in flight with outcome unknown) to the [`on_drop`](Self::on_drop) sink, or
    /// kept for a [`DropReport`]. With neither, a warning is printed: never silently.
    fn drop(&mut self) {
        if self.sink.lock().report.is_some() {
            return; // an explicit stop already produced the report for its callers
        }
        let now = self.clock.now();
        self.begin_stop(now);
        // `&mut self`: no push is mid-publish, so the stop finishes at once.
        let Some(report) = self.poll_stop(now) else {
            unreachable!("a stop with a past deadline and no concurrent push finishes at once");
        };
        let mut slot = self.drop_slot.lock();
        if let Some(hand_back) = slot.hand_back.take() {
            drop(slot);
            hand_back(report);
            return;
        }
        if !report.handed_back.is_empty() && Arc::strong_count(&self.drop_slot) == 1 {
            eprintln!(
                "tidemark: a batch buffer was dropped holding {} undelivered messages, with no \
                 stop, hand-back sink (on_drop) or drop_report handle; they are lost",
                report.handed_back.len()
            );
        }
        slot.report = Some(report);
    }
}
