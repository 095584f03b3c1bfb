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
//! - Producers (any thread, lock-free; `produce.rs`): one CAS on the state word (`word.rs`)
//!   checks the phase and the capacities and advances the reservation positions, which hand the
//!   push its ring slot and arena bytes (`ring.rs`); one copy into the arena and one slot
//!   publication follow. No lock, no clock read, no allocation (the first push allocates the
//!   ring and arena).
//! - The sink side (one at a time; `consume.rs`) holds a mutex over the sink state (`sink.rs`):
//!   it drains the ring, stamps arrivals, plans batches (copying their payloads out of the
//!   arena), tracks batches in flight; `stop.rs` flushes, stops and builds the report.
//! - Capacity is released only at a terminal state (ack, nack without requeue, hand-back), so
//!   `capacity_*` bounds everything accepted and unresolved, including batches in flight.
//!
//! See `docs/ARCHITECTURE.md` ("Batch buffer") and `docs/MEMORY_ORDERING.md`.
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::Offset;
use crate::sync::{AtomicBool, AtomicU64, CachePadded, Condvar, Mutex, Ordering};

mod consume;
mod link;
mod produce;
#[path = "../../../testkit/src/batch.rs"]
mod reference;
mod ring;
mod sink;
mod stop;
mod types;
mod word;

pub use link::TrackerLink;
// Kept for code written against earlier versions: the reference batcher lives in the
// `tidemark-testkit` crate (`tidemark_testkit::batch`), which compiles this same source.
#[doc(hidden)]
pub use reference::{RefPoll, RefReport, ReferenceBatcher};
pub use types::{
    AckError, Batch, BatchConfig, BatchId, BatchStats, Clock, ConfigError, FlushError, FlushLink,
    HandedBack, LinkError, ManualClock, Message, MessageDesc, MessageRef, Poll, PushError,
    PushManyError, PushRefusal, StopReport, SystemClock, TakeError, Trigger,
};

use ring::Ring;
use sink::{Limits, Plan, Sink};
use types::nanos;
use word::{Phase, Threshold, Word};

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
