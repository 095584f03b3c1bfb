//! Public value types of the batch buffer: messages, batches, configuration, errors, reports.
use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::Offset;
use crate::sync::{AtomicU64, Ordering};

/// A message: owned bytes plus an optional source-log offset.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Message {
    /// The bytes.
    pub payload: Vec<u8>,
    /// Where the message comes from in the source log, if anywhere.
    pub offset: Option<Offset>,
}

impl Message {
    /// A message without an offset.
    pub fn new(payload: impl Into<Vec<u8>>) -> Message {
        Message {
            payload: payload.into(),
            offset: None,
        }
    }

    /// A message with an offset.
    pub fn with_offset(payload: impl Into<Vec<u8>>, offset: Offset) -> Message {
        Message {
            payload: payload.into(),
            offset: Some(offset),
        }
    }

    /// Size in bytes, as counted by the triggers and capacities (the payload length).
    #[inline]
    pub fn len(&self) -> usize {
        self.payload.len()
    }

    /// True when the payload is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.payload.is_empty()
    }
}

/// Identifies a batch handed to the sink; unique per buffer, increasing in emission order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BatchId(pub(super) u64);

impl BatchId {
    /// The raw id (for hosts that keep batches in a table keyed by id).
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for BatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "batch#{}", self.0)
    }
}

/// Why a batch was emitted. Checked in the order Count, Bytes, Stop, Linger, Flush: the first
/// that holds is reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Trigger {
    /// It reached `max_messages`.
    Count,
    /// It reached `max_bytes`, the next message did not fit, or it is one oversize message.
    Bytes,
    /// Its first message is `linger` old.
    Linger,
    /// A `flush` asked for the messages it holds.
    Flush,
    /// The buffer is stopping (everything goes at once).
    Stop,
}

/// A borrowed message: a payload slice and an optional offset (what a batch's views yield,
/// and what [`BatchBuffer::push_refs`](super::BatchBuffer::push_refs) copies in).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MessageRef<'a> {
    /// The bytes.
    pub payload: &'a [u8],
    /// Where the message comes from in the source log, if anywhere.
    pub offset: Option<Offset>,
}

impl<'a> MessageRef<'a> {
    /// A borrowed message without an offset.
    pub fn new(payload: &'a [u8]) -> MessageRef<'a> {
        MessageRef {
            payload,
            offset: None,
        }
    }

    /// An owned copy.
    pub fn to_message(&self) -> Message {
        Message {
            payload: self.payload.to_vec(),
            offset: self.offset,
        }
    }
}

impl<'a> From<&'a Message> for MessageRef<'a> {
    fn from(m: &'a Message) -> MessageRef<'a> {
        MessageRef {
            payload: &m.payload,
            offset: m.offset,
        }
    }
}

/// One message of a batch, as laid out in [`Batch::descs`]: its length (its bytes follow the
/// previous message's in [`Batch::payload_bytes`]) and its offset. `repr(C)`, so a host can
/// read the array in place (the C ABI's `tidemark_msg_desc` has this layout).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MessageDesc {
    /// Payload length in bytes.
    pub len: u64,
    /// The offset (meaningful when `has_offset`).
    pub offset: Offset,
    /// Whether the message carries an offset.
    pub has_offset: bool,
}

impl MessageDesc {
    /// The offset, if the message has one.
    pub fn offset(&self) -> Option<Offset> {
        self.has_offset.then_some(self.offset)
    }
}

/// The shared part of a batch: the sink reads it; the buffer keeps it until the batch's outcome
/// is known, so that a batch still in flight at the stop deadline can be handed back. Payloads
/// are stored back to back in one allocation.
#[derive(Debug)]
pub(super) struct BatchData {
    pub(super) payload: Vec<u8>,
    pub(super) descs: Vec<MessageDesc>,
    /// Per message, where its bytes start in `payload` (plus one entry for the end).
    pub(super) starts: Vec<usize>,
    /// Per message, the order in which the sink side received it (its global position).
    pub(super) seqs: Vec<u64>,
    /// Owned copies for [`Batch::messages`], made on first use.
    pub(super) owned: std::sync::OnceLock<Vec<Message>>,
}

impl BatchData {
    pub(super) fn with_capacity(messages: usize, bytes: usize) -> BatchData {
        let mut starts = Vec::with_capacity(messages + 1);
        starts.push(0);
        BatchData {
            payload: Vec::with_capacity(bytes),
            descs: Vec::with_capacity(messages),
            starts,
            seqs: Vec::with_capacity(messages),
            owned: std::sync::OnceLock::new(),
        }
    }

    /// Appends one message's descriptor; its `len` bytes are appended to `payload` by the
    /// caller (now or, for a run of messages contiguous in the arena, in one copy after the
    /// run's last descriptor).
    pub(super) fn push_desc(&mut self, seq: u64, offset: Option<Offset>, len: u64) {
        let end = self.starts.last().copied().unwrap_or(0) + len as usize;
        self.starts.push(end);
        self.descs.push(MessageDesc {
            len,
            offset: offset.unwrap_or_default(),
            has_offset: offset.is_some(),
        });
        self.seqs.push(seq);
    }

    pub(super) fn len(&self) -> usize {
        self.descs.len()
    }

    pub(super) fn get(&self, i: usize) -> MessageRef<'_> {
        MessageRef {
            payload: &self.payload[self.starts[i]..self.starts[i + 1]],
            offset: self.descs[i].offset(),
        }
    }

    pub(super) fn iter(&self) -> impl ExactSizeIterator<Item = MessageRef<'_>> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }
}

/// A batch handed to the sink. Give it back with [`BatchBuffer::ack`](super::BatchBuffer::ack)
/// or [`BatchBuffer::nack`](super::BatchBuffer::nack); a batch dropped without either stays in
/// flight and is handed back (outcome unknown) at stop.
///
/// Its payloads are views into one allocation ([`get`](Self::get), [`iter`](Self::iter),
/// [`payload_bytes`](Self::payload_bytes)), valid while the batch is held.
#[derive(Debug)]
pub struct Batch {
    pub(super) id: BatchId,
    pub(super) owner: usize,
    pub(super) trigger: Trigger,
    pub(super) bytes: u64,
    pub(super) highest_offset: Option<Offset>,
    pub(super) data: Arc<BatchData>,
}

impl Batch {
    /// The batch's id.
    pub fn id(&self) -> BatchId {
        self.id
    }
    /// The messages as owned copies, oldest first. The first call copies every payload (the
    /// batch stores them back to back); prefer [`iter`](Self::iter) or [`get`](Self::get),
    /// which borrow.
    pub fn messages(&self) -> &[Message] {
        self.data
            .owned
            .get_or_init(|| self.data.iter().map(|m| m.to_message()).collect())
    }
    /// Message `i` (oldest first), borrowed. Panics when `i >= len()`.
    pub fn get(&self, i: usize) -> MessageRef<'_> {
        self.data.get(i)
    }
    /// The messages, oldest first, borrowed.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = MessageRef<'_>> + '_ {
        self.data.iter()
    }
    /// Every payload, back to back and oldest first (`bytes()` long); [`descs`](Self::descs)
    /// gives each message's length and offset.
    pub fn payload_bytes(&self) -> &[u8] {
        &self.data.payload
    }
    /// Each message's length and offset, oldest first.
    pub fn descs(&self) -> &[MessageDesc] {
        &self.data.descs
    }
    /// Number of messages (at least one).
    pub fn len(&self) -> usize {
        self.data.len()
    }
    /// Always false: the buffer never emits an empty batch.
    pub fn is_empty(&self) -> bool {
        self.data.len() == 0
    }
    /// Total payload bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
    /// The highest message offset in the batch (what acking it may report to a tracker).
    pub fn highest_offset(&self) -> Option<Offset> {
        self.highest_offset
    }
    /// Why the batch was emitted.
    pub fn trigger(&self) -> Trigger {
        self.trigger
    }
}

/// A monotonic clock, injectable for tests. Times are durations since the clock's own origin.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time.
    fn now(&self) -> Duration;
}

/// The default clock: `std::time::Instant`, with a process-wide origin.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        ORIGIN.get_or_init(std::time::Instant::now).elapsed()
    }
}

/// A clock that moves only when told to (tests, simulations).
#[derive(Debug, Default)]
pub struct ManualClock {
    nanos: AtomicU64,
}

impl ManualClock {
    /// A clock reading `start`.
    pub fn new(start: Duration) -> ManualClock {
        ManualClock {
            nanos: AtomicU64::new(nanos(start)),
        }
    }
    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        // Relaxed: the time is a value, not a publication of other data.
        self.nanos.fetch_add(nanos(by), Ordering::Relaxed);
    }
    /// Sets the clock to `to` (callers keep it monotonic).
    pub fn set(&self, to: Duration) {
        // Relaxed: as in `advance`.
        self.nanos.store(nanos(to), Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        // Relaxed: as in `advance`.
        Duration::from_nanos(self.nanos.load(Ordering::Relaxed))
    }
}

/// A duration in whole nanoseconds, saturating.
#[inline]
pub(super) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Where acknowledged offsets go: typically a flush-tracker writer. Called after an ack with the
/// highest offset that is now durably handled *and* preceded only by handled messages (delivered
/// or failed), so out-of-order acks never over-report. This assumes offsets are pushed in
/// non-decreasing order (one sequencer, as commits are); handed-back messages are never reported.
pub trait FlushLink: Send + Sync + fmt::Debug {
    /// Reports that everything up to and including `offset` is flushed, at `now_ms` on the
    /// buffer's clock.
    fn flushed(&self, offset: Offset, now_ms: u64) -> Result<(), LinkError>;
}

/// A [`FlushLink`] failure. The batch was still delivered.
#[derive(Debug)]
pub struct LinkError(pub Box<dyn Error + Send + Sync>);

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "flush link failed: {}", self.0)
    }
}

impl Error for LinkError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.0)
    }
}

/// Configuration of a [`BatchBuffer`](super::BatchBuffer); checked by `BatchBuffer::new`.
#[non_exhaustive]
#[derive(Clone, Debug)]
pub struct BatchConfig {
    /// Count trigger: a batch holds at most this many messages (≥ 1).
    pub max_messages: usize,
    /// Bytes trigger: a batch holds at most this many payload bytes (≥ 1), except that one
    /// message larger than this is emitted alone.
    pub max_bytes: u64,
    /// Age trigger: a batch is emitted once its first message is this old (zero: at once).
    pub linger: Duration,
    /// Capacity: accepted messages not yet delivered, failed or handed back (≥ `max_messages`,
    /// ≤ [`BatchConfig::MAX_CAPACITY_MESSAGES`]). The ring of this many slots (40 bytes each,
    /// rounded up to a power of two) and the payload arena are allocated by the first push.
    pub capacity_messages: usize,
    /// Capacity in payload bytes (≥ `max_bytes`, ≤ [`BatchConfig::MAX_CAPACITY_BYTES`]).
    pub capacity_bytes: u64,
    /// At most this many batches are handed out and not yet acked or nacked (≥ 1).
    pub max_inflight_batches: usize,
    /// The clock for linger and the link's `now_ms`; `None`: [`SystemClock`].
    pub clock: Option<Arc<dyn Clock>>,
    /// Where acked offsets are reported; `None`: nowhere.
    pub flush_link: Option<Arc<dyn FlushLink>>,
}

impl BatchConfig {
    /// Upper bound of `capacity_messages` (it sizes the ring).
    pub const MAX_CAPACITY_MESSAGES: usize = 1 << 22;
    /// Upper bound of `capacity_bytes` (32 GiB - 1; the state word's byte field).
    pub const MAX_CAPACITY_BYTES: u64 = super::word::BYTES_MAX;

    /// Checks the values (`BatchBuffer::new` does this too).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("max_messages", self.max_messages as u64),
            ("max_bytes", self.max_bytes),
            ("capacity_messages", self.capacity_messages as u64),
            ("capacity_bytes", self.capacity_bytes),
            ("max_inflight_batches", self.max_inflight_batches as u64),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(ConfigError::Zero { field });
            }
        }
        if self.capacity_messages > Self::MAX_CAPACITY_MESSAGES {
            return Err(ConfigError::TooLarge {
                field: "capacity_messages",
                max: Self::MAX_CAPACITY_MESSAGES as u64,
            });
        }
        if self.capacity_bytes > Self::MAX_CAPACITY_BYTES {
            return Err(ConfigError::TooLarge {
                field: "capacity_bytes",
                max: Self::MAX_CAPACITY_BYTES,
            });
        }
        if self.capacity_messages < self.max_messages {
            return Err(ConfigError::CapacityBelowBatch {
                capacity: "capacity_messages",
                batch: "max_messages",
            });
        }
        if self.capacity_bytes < self.max_bytes {
            return Err(ConfigError::CapacityBelowBatch {
                capacity: "capacity_bytes",
                batch: "max_bytes",
            });
        }
        Ok(())
    }
}

impl Default for BatchConfig {
    /// 512 messages / 1 MiB / 5 ms per batch; 64 Ki messages / 64 MiB buffered; 4 in flight.
    fn default() -> Self {
        BatchConfig {
            max_messages: 512,
            max_bytes: 1 << 20,
            linger: Duration::from_millis(5),
            capacity_messages: 1 << 16,
            capacity_bytes: 64 << 20,
            max_inflight_batches: 4,
            clock: None,
            flush_link: None,
        }
    }
}

/// An invalid [`BatchConfig`].
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// The field must be at least 1.
    Zero {
        /// The field's name.
        field: &'static str,
    },
    /// The field exceeds its maximum.
    TooLarge {
        /// The field's name.
        field: &'static str,
        /// Its largest allowed value.
        max: u64,
    },
    /// A capacity is below one batch, so the trigger could never fire.
    CapacityBelowBatch {
        /// The capacity field.
        capacity: &'static str,
        /// The batch-size field it must be at least.
        batch: &'static str,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Zero { field } => write!(f, "batch config: {field} must be at least 1"),
            ConfigError::TooLarge { field, max } => {
                write!(f, "batch config: {field} must be at most {max}")
            }
            ConfigError::CapacityBelowBatch { capacity, batch } => {
                write!(f, "batch config: {capacity} must be at least {batch}")
            }
        }
    }
}

impl Error for ConfigError {}

/// Why a push was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PushRefusal {
    /// Accepting it would exceed `capacity_messages` or `capacity_bytes` (retry later).
    Full,
    /// The buffer is stopping (admission closed; draining).
    Stopping,
    /// The buffer is closed.
    Closed,
    /// The message alone exceeds `capacity_bytes`: it can never be accepted.
    TooLarge,
}

/// A refused push: the reason and the message, handed back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushError {
    /// Why.
    pub reason: PushRefusal,
    /// The message, untouched.
    pub message: Message,
}

impl fmt::Display for PushError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "push refused: {:?}", self.reason)
    }
}

impl Error for PushError {}

/// A `push_many` that accepted only a prefix: the reason and the refused rest, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushManyError {
    /// Why the first refused message was refused.
    pub reason: PushRefusal,
    /// How many messages (from the front) were accepted.
    pub accepted: usize,
    /// The refused messages, in their original order.
    pub rest: Vec<Message>,
}

impl fmt::Display for PushManyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "push_many accepted {} and refused {}: {:?}",
            self.accepted,
            self.rest.len(),
            self.reason
        )
    }
}

impl Error for PushManyError {}

/// What the sink can be told by [`BatchBuffer::poll_batch`](super::BatchBuffer::poll_batch).
#[derive(Debug)]
pub enum Poll {
    /// A batch to deliver.
    Ready(Batch),
    /// Nothing to take yet. `Some(d)`: the next linger deadline is `d` away; `None`: no deadline
    /// is pending (nothing buffered, or the in-flight bound is reached): poll after the next push
    /// or ack.
    Wait(Option<Duration>),
    /// The buffer is closed; nothing more will be emitted.
    Closed,
}

/// Why [`BatchBuffer::next_batch`](super::BatchBuffer::next_batch) returned no batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TakeError {
    /// No batch became ready within the timeout.
    Timeout,
    /// The buffer is closed.
    Closed,
}

impl fmt::Display for TakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TakeError::Timeout => f.write_str("no batch within the timeout"),
            TakeError::Closed => f.write_str("batch buffer closed"),
        }
    }
}

impl Error for TakeError {}

/// An `ack` or `nack` that did not apply as asked.
#[derive(Debug)]
pub enum AckError {
    /// The batch is not in flight here: it belongs to another buffer, or the stop deadline
    /// passed and it was handed back with outcome unknown. Nothing changed; the batch is
    /// returned.
    NotInFlight(Batch),
    /// The ack was applied (the batch is delivered), but reporting its offset to the flush link
    /// failed.
    Link(LinkError),
}

impl fmt::Display for AckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AckError::NotInFlight(b) => write!(f, "{} is not in flight in this buffer", b.id),
            AckError::Link(e) => write!(f, "batch delivered, but {e}"),
        }
    }
}

impl Error for AckError {}

/// Why a [`BatchBuffer::flush`](super::BatchBuffer::flush) did not complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FlushError {
    /// The deadline passed before every message buffered at the call was acked or failed.
    Timeout,
    /// The buffer closed first; the rest is in its stop report.
    Closed,
}

impl fmt::Display for FlushError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlushError::Timeout => f.write_str("flush deadline passed"),
            FlushError::Closed => f.write_str("batch buffer closed during flush"),
        }
    }
}

impl Error for FlushError {}

/// A message handed back by a stop: it was accepted but not delivered or failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandedBack {
    /// The message.
    pub message: Message,
    /// True when it was in a batch still in flight at the deadline: the sink may or may not
    /// have delivered it (redelivery may duplicate it).
    pub outcome_unknown: bool,
}

/// What a stop did with every accepted message. `accepted == delivered + failed +
/// handed_back.len()`.
#[non_exhaustive]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StopReport {
    /// Messages accepted over the buffer's life.
    pub accepted: u64,
    /// Messages in acked batches.
    pub delivered: u64,
    /// Messages in batches nacked without requeue.
    pub failed: u64,
    /// Everything else, in acceptance order (per producer: push order).
    pub handed_back: Vec<HandedBack>,
    /// How many of `handed_back` have an unknown outcome (were in flight at the deadline).
    pub in_flight_unknown: u64,
    /// The batches that were in flight at the deadline, oldest first.
    pub unknown_batches: Vec<BatchId>,
    /// True when the deadline cut the drain short (something was handed back).
    pub timed_out: bool,
}

impl StopReport {
    /// Number of handed-back messages.
    pub fn handed_back_count(&self) -> u64 {
        self.handed_back.len() as u64
    }
}

/// Counters and gauges of a buffer (one consistent snapshot of the sink side).
#[non_exhaustive]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Messages accepted.
    pub accepted: u64,
    /// Pushes refused with [`PushRefusal::Full`] (a `push_timeout` counts once, when it gives up).
    pub rejected_full: u64,
    /// Pushes refused with [`PushRefusal::Stopping`].
    pub rejected_stopping: u64,
    /// Pushes refused with [`PushRefusal::Closed`].
    pub rejected_closed: u64,
    /// Pushes refused with [`PushRefusal::TooLarge`].
    pub rejected_too_large: u64,
    /// Batches emitted by the count trigger.
    pub batches_by_count: u64,
    /// Batches emitted by the bytes trigger.
    pub batches_by_bytes: u64,
    /// Batches emitted by linger.
    pub batches_by_linger: u64,
    /// Batches emitted by a flush.
    pub batches_by_flush: u64,
    /// Batches emitted by a stop.
    pub batches_by_stop: u64,
    /// Messages delivered (acked).
    pub delivered: u64,
    /// Messages failed (nacked without requeue).
    pub failed: u64,
    /// Messages requeued by nacks (a message requeued twice counts twice).
    pub requeued: u64,
    /// Messages handed back by a stop.
    pub handed_back: u64,
    /// Accepted messages not yet handed to the sink (in the ring or staged).
    pub queued_messages: u64,
    /// Their payload bytes.
    pub queued_bytes: u64,
    /// Batches handed to the sink and not yet acked or nacked.
    pub in_flight_batches: u64,
    /// Messages in those batches.
    pub in_flight_messages: u64,
    /// Flush-link reports that failed.
    pub link_errors: u64,
    /// Acks and nacks of batches that were not in flight (late, after a stop deadline).
    pub late_acks: u64,
}
