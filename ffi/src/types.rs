//! The `#[repr(C)]` types of the ABI and their conversions to and from the core's types.

use tidemark_core::batch::{MessageDesc, MessageRef, PushRefusal, Trigger};
use tidemark_core::{EvictReason, Offset, TrackerError};

use crate::tidemark_status;

/// A writer id, as issued by `tidemark_tracker_register`: a generation in the high 32 bits and a
/// slot index in the low 32, so an id that was unregistered (a stale id) is refused with
/// `TIDEMARK_STATUS_UNKNOWN_WRITER` even after its slot is reused.
pub type tidemark_writer_id = u64;

/// A position in the source log, ordered by `tx` then `op`. A commit is handed to the tracker
/// with its last offset; the ack is a `tx`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct tidemark_offset {
    /// The transaction's commit position (an LSN, a Kafka offset).
    pub tx: u64,
    /// The operation's position inside the transaction.
    pub op: u64,
}

impl From<tidemark_offset> for Offset {
    fn from(o: tidemark_offset) -> Offset {
        Offset::new(o.tx, o.op)
    }
}

impl From<Offset> for tidemark_offset {
    fn from(o: Offset) -> tidemark_offset {
        tidemark_offset { tx: o.tx, op: o.op }
    }
}

/// Why a writer went down, passed to `tidemark_tracker_down` (the number is the `class`
/// argument).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum tidemark_down_class {
    /// It crashed: evicted now (its deliveries stop pinning the ack), reported as an
    /// `EVICTED` event with reason `CRASHED`.
    Crash = 0,
    /// A deliberate removal is under way: it stops pinning now, reported as `REMOVED`.
    Cleanup = 1,
    /// Shut down or killed with no process left (what a process monitor sees): it keeps
    /// pinning (a rolling deploy must not mass-evict) but is marked orphaned; the first sweep
    /// past the grace period evicts it without a challenge (reason `ORPHANED`).
    Teardown = 2,
}

/// What a `tidemark_event` reports.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum tidemark_event_kind {
    /// The writer made no progress for the grace period: answer with `tidemark_tracker_touch`
    /// (or a flush) before the next sweep, or it is evicted.
    Challenged = 0,
    /// The writer was evicted; `reason` says why. Its pending deliveries no longer pin the ack.
    Evicted = 1,
    /// The writer was reported down with class `CLEANUP` (`tidemark_tracker_remove` queues
    /// no event).
    Removed = 2,
}

/// Why a writer was evicted.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum tidemark_evict_reason {
    /// Not evicted (the event or status is of another kind).
    None = 0,
    /// Reported down as `CRASH` or `CLEANUP`.
    Crashed = 1,
    /// Reported down as `TEARDOWN` and swept after the grace period.
    Orphaned = 2,
    /// Alive but made no progress, challenged, and did not answer.
    Stalled = 3,
}

impl From<EvictReason> for tidemark_evict_reason {
    fn from(r: EvictReason) -> Self {
        match r {
            EvictReason::Crashed => tidemark_evict_reason::Crashed,
            EvictReason::Orphaned => tidemark_evict_reason::Orphaned,
            EvictReason::Stalled => tidemark_evict_reason::Stalled,
        }
    }
}

/// A staleness event, taken with `tidemark_tracker_take_events`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct tidemark_event {
    /// What happened.
    pub kind: tidemark_event_kind,
    /// For `EVICTED`, why; otherwise `TIDEMARK_EVICT_REASON_NONE`.
    pub reason: tidemark_evict_reason,
    /// The writer it happened to.
    pub writer: tidemark_writer_id,
}

/// The state of a writer, from `tidemark_tracker_writer_status`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum tidemark_writer_state {
    /// Registered and owes nothing.
    Idle = 0,
    /// Owes at least one delivered commit.
    Pending = 1,
    /// Evicted (see the reason); unregister it to free its slot.
    Evicted = 2,
}

/// A writer's state and, when evicted, the reason.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct tidemark_writer_status {
    /// The state.
    pub state: tidemark_writer_state,
    /// For `EVICTED`, why; otherwise `TIDEMARK_EVICT_REASON_NONE`.
    pub reason: tidemark_evict_reason,
}

/// Options for `tidemark_tracker_new`; fill with `tidemark_tracker_options_default` first, then
/// change fields.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct tidemark_tracker_options {
    /// When `has_initial_ack`: the ack before the first commit (a position already confirmed
    /// upstream); it is a floor the ack never goes below. Must be below `UINT64_MAX`.
    pub initial_ack: u64,
    /// Whether `initial_ack` is set (0 or 1; anything else is `INVALID_ARGUMENT`).
    pub has_initial_ack: CBool,
    /// Writer slots to allocate up front (≤ `max_writers`).
    pub expected_writers: usize,
    /// The most writers registered at once (1 to `UINT32_MAX`).
    pub max_writers: usize,
    /// The progress timeout: a pending writer without progress for this long is challenged by a
    /// sweep, and evicted by a later sweep if it still made none.
    pub stall_grace_ms: u64,
    /// How many undelivered events are kept (evictions are never dropped).
    pub event_capacity: usize,
}

/// What the writer pinning the ack owes, from `tidemark_tracker_pinning`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct tidemark_pinning {
    /// The writer whose oldest unflushed delivery holds the ack back.
    pub writer: tidemark_writer_id,
    /// The offset of that delivery.
    pub owes: tidemark_offset,
    /// The highest offset it reported flushed (valid when `has_flushed`).
    pub flushed: tidemark_offset,
    /// Whether it reported any flush.
    pub has_flushed: bool,
    /// Milliseconds since it last made progress.
    pub ms_since_progress: u64,
    /// It is paused (backpressure): not challenged while paused.
    pub paused: bool,
    /// It was challenged and has not answered yet.
    pub challenged: bool,
    /// It was reported down as `TEARDOWN` and waits for the sweep.
    pub orphaned: bool,
}

/// What the tracker's calls did to its delivery log, from `tidemark_tracker_work_stats`: the
/// evidence that every call does bounded work.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct tidemark_work_stats {
    /// The most deliveries one call may examine (`tidemark_tracker_set_call_budget`).
    pub budget: u64,
    /// Deliveries popped at the head of the log, in all.
    pub deliveries_popped: u64,
    /// Deliveries examined by compaction, in all.
    pub entries_scanned: u64,
    /// The most deliveries any single call examined so far (never above `budget`).
    pub max_call_work: u64,
    /// Calls that stopped at the budget and left a backlog for later calls.
    pub backlogs: u64,
    /// Leftover work waits for later calls (`tidemark_tracker_run_backlog`).
    pub backlog: bool,
    /// Deliveries in the log now.
    pub log_len: u64,
}

/// A C `bool` field of a struct the caller fills in. Read as the byte it is, so a value other
/// than 0 or 1 (which C cannot produce by assignment, but memory can hold) is refused with
/// `INVALID_ARGUMENT` instead of becoming an invalid Rust `bool`. The header shows it as `bool`.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CBool(u8);

impl CBool {
    /// `true`.
    pub const TRUE: CBool = CBool(1);
    /// `false`.
    pub const FALSE: CBool = CBool(0);

    /// The flag, or `INVALID_ARGUMENT` when the byte is neither 0 nor 1.
    pub fn get(self) -> Result<bool, tidemark_status> {
        match self.0 {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(tidemark_status::InvalidArgument),
        }
    }
}

impl From<bool> for CBool {
    fn from(b: bool) -> CBool {
        CBool(b as u8)
    }
}

/// Counters and gauges of a tracker, from `tidemark_tracker_stats`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct tidemark_tracker_counters {
    /// The ack (valid when `has_ack`).
    pub ack: u64,
    /// Whether an ack exists.
    pub has_ack: bool,
    /// The last commit's offset (valid when `has_last_seen`).
    pub last_seen: tidemark_offset,
    /// Whether any commit was seen.
    pub has_last_seen: bool,
    /// `last_seen.tx - ack` (0 when either is missing).
    pub ack_lag: u64,
    /// How many times the ack moved.
    pub ack_advances: u64,
    /// Writers registered (including evicted ones not yet unregistered).
    pub registered: u64,
    /// Writers owing at least one commit.
    pub pending: u64,
    /// Commits accepted.
    pub commits: u64,
    /// Flush reports accepted.
    pub flushes: u64,
    /// Flush reports for deliveries that no longer pinned anything.
    pub late_flushes: u64,
    /// Writers removed.
    pub removes: u64,
    /// Challenges issued.
    pub challenges: u64,
    /// Writers evicted as crashed.
    pub evicted_crashed: u64,
    /// Writers evicted as orphaned.
    pub evicted_orphaned: u64,
    /// Writers evicted as stalled.
    pub evicted_stalled: u64,
    /// Challenge or removal events dropped because the queue was full (evictions never are).
    pub events_dropped: u64,
    /// Heap bytes the tracker holds.
    pub memory_bytes: u64,
}

/// What a sweep did.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct tidemark_sweep_outcome {
    /// Writers challenged by this sweep.
    pub challenged: usize,
    /// Writers evicted by this sweep.
    pub evicted: usize,
}

/// Configuration for `tidemark_batch_buffer_new`; fill with `tidemark_batch_config_default`
/// first, then change fields.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct tidemark_batch_config {
    /// Count trigger: a batch holds at most this many messages (≥ 1).
    pub max_messages: usize,
    /// Bytes trigger: a batch holds at most this many payload bytes (≥ 1); one message larger
    /// than this is emitted alone.
    pub max_bytes: u64,
    /// Age trigger, in microseconds: a batch is emitted once its first message is this old.
    pub linger_us: u64,
    /// Accepted messages held at most (≥ `max_messages`, ≤ 4 194 304; a ring of 40-byte slots
    /// and a payload arena of `capacity_bytes` rounded up to a power of two, allocated by the
    /// first push).
    pub capacity_messages: usize,
    /// Payload bytes held at most (≥ `max_bytes`).
    pub capacity_bytes: u64,
    /// Batches handed out and not yet acked or nacked, at most (≥ 1).
    pub max_inflight_batches: usize,
    /// NULL, or a tracker that acked batches report to: `tidemark_tracker_flushed` for
    /// `link_writer` with the batch's highest offset, `now_ms` from `tidemark_monotonic_ms`. The
    /// buffer keeps its own reference: the tracker handle may be freed before the buffer.
    pub link_tracker: *const crate::tracker::tidemark_tracker,
    /// The writer acked batches are reported for (ignored when `link_tracker` is NULL).
    pub link_writer: tidemark_writer_id,
}

/// A message: a byte range and an optional offset.
///
/// As input (`push`), the library copies the bytes during the call; the caller keeps ownership
/// of `data`. As output (from a batch or a stop report) `data` points into memory owned by that
/// batch or report: valid until it is freed (or the batch is acked or nacked); do not free it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct tidemark_message {
    /// The payload (may be NULL when `len` is 0).
    pub data: *const u8,
    /// The payload's length in bytes.
    pub len: usize,
    /// The message's log offset (valid when `has_offset`).
    pub offset: tidemark_offset,
    /// Whether the message carries an offset (0 or 1; anything else is `INVALID_ARGUMENT`).
    pub has_offset: CBool,
}

impl tidemark_message {
    pub(crate) fn view(m: MessageRef<'_>) -> tidemark_message {
        tidemark_message {
            data: m.payload.as_ptr(),
            len: m.payload.len(),
            offset: m.offset.unwrap_or_default().into(),
            has_offset: m.offset.is_some().into(),
        }
    }

    /// The message's offset, if it has one; `INVALID_ARGUMENT` for a `has_offset` byte that is
    /// neither 0 nor 1.
    pub(crate) fn offset(&self) -> Result<Option<Offset>, tidemark_status> {
        Ok(self.has_offset.get()?.then(|| self.offset.into()))
    }
}

/// One message of a packed push (`tidemark_batch_buffer_push_packed`) or of a batch view
/// (`tidemark_batch_get_view`): its length (its bytes follow the previous message's in the payload
/// buffer) and its offset.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct tidemark_msg_desc {
    /// Payload length in bytes.
    pub len: u64,
    /// The message's log offset (valid when `has_offset`).
    pub offset: tidemark_offset,
    /// Whether the message carries an offset (0 or 1; anything else is `INVALID_ARGUMENT`).
    pub has_offset: CBool,
}

// The core's `MessageDesc` has this exact layout (both `repr(C)`; `bool` is one byte holding 0
// or 1, `CBool` is a transparent byte): a batch's descriptors are lent to C in place.
const _: () = {
    use std::mem::{align_of, offset_of, size_of};
    assert!(size_of::<tidemark_msg_desc>() == size_of::<MessageDesc>());
    assert!(align_of::<tidemark_msg_desc>() == align_of::<MessageDesc>());
    assert!(offset_of!(tidemark_msg_desc, len) == offset_of!(MessageDesc, len));
    assert!(offset_of!(tidemark_msg_desc, offset) == offset_of!(MessageDesc, offset));
    assert!(offset_of!(tidemark_msg_desc, has_offset) == offset_of!(MessageDesc, has_offset));
    assert!(size_of::<tidemark_offset>() == size_of::<Offset>());
    assert!(offset_of!(tidemark_offset, tx) == offset_of!(Offset, tx));
    assert!(offset_of!(tidemark_offset, op) == offset_of!(Offset, op));
};

impl tidemark_msg_desc {
    /// The core's descriptors, seen as C descriptors (same layout, checked above).
    pub(crate) fn from_core(d: &[MessageDesc]) -> &[tidemark_msg_desc] {
        // SAFETY: identical size, alignment and field offsets (compile-time checks above), and
        // every `MessageDesc` bit pattern is a valid `tidemark_msg_desc` (`bool` 0/1 is a valid
        // `CBool` byte; `Offset` and `tidemark_offset` are two `u64`s).
        unsafe { std::slice::from_raw_parts(d.as_ptr().cast(), d.len()) }
    }

    /// The message's offset, if it has one; `INVALID_ARGUMENT` for a `has_offset` byte that is
    /// neither 0 nor 1.
    pub(crate) fn offset(&self) -> Result<Option<Offset>, tidemark_status> {
        Ok(self.has_offset.get()?.then(|| self.offset.into()))
    }
}

/// A borrowed view of a whole batch (`tidemark_batch_get_view`): valid until the batch handle is
/// released.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct tidemark_batch_view {
    /// Every payload, back to back, oldest first (never NULL; not to be read when
    /// `payload_len` is 0).
    pub payload: *const u8,
    /// Total payload bytes (the batch's `bytes`).
    pub payload_len: usize,
    /// One descriptor per message, oldest first.
    pub descs: *const tidemark_msg_desc,
    /// Number of messages.
    pub len: usize,
}

/// Why a batch was emitted.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum tidemark_trigger {
    /// It reached `max_messages`.
    Count = 0,
    /// It reached `max_bytes` (or is one oversize message).
    Bytes = 1,
    /// Its first message reached the linger age.
    Linger = 2,
    /// A flush asked for it.
    Flush = 3,
    /// The buffer is stopping.
    Stop = 4,
}

impl From<Trigger> for tidemark_trigger {
    fn from(t: Trigger) -> Self {
        match t {
            Trigger::Count => tidemark_trigger::Count,
            Trigger::Bytes => tidemark_trigger::Bytes,
            Trigger::Linger => tidemark_trigger::Linger,
            Trigger::Flush => tidemark_trigger::Flush,
            Trigger::Stop => tidemark_trigger::Stop,
        }
    }
}

/// A batch's summary, from `tidemark_batch_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct tidemark_batch_summary {
    /// The batch's id (unique within its buffer).
    pub id: u64,
    /// Number of messages (at least 1).
    pub len: usize,
    /// Total payload bytes.
    pub bytes: u64,
    /// The highest message offset (valid when `has_offset`): what acking it reports to a
    /// linked tracker.
    pub highest_offset: tidemark_offset,
    /// Whether any message carries an offset.
    pub has_offset: bool,
    /// Why it was emitted.
    pub trigger: tidemark_trigger,
}

/// Counters and gauges of a batch buffer, from `tidemark_batch_buffer_stats`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct tidemark_batch_buffer_counters {
    /// Messages accepted.
    pub accepted: u64,
    /// Pushes refused because the buffer was full.
    pub rejected_full: u64,
    /// Pushes refused while stopping.
    pub rejected_stopping: u64,
    /// Pushes refused after close.
    pub rejected_closed: u64,
    /// Pushes refused as too large.
    pub rejected_too_large: u64,
    /// Batches emitted (any trigger).
    pub batches: u64,
    /// Messages delivered (in acked batches).
    pub delivered: u64,
    /// Messages failed (nacked without requeue).
    pub failed: u64,
    /// Messages requeued by nacks.
    pub requeued: u64,
    /// Messages handed back by a stop.
    pub handed_back: u64,
    /// Messages buffered, not yet handed out.
    pub queued_messages: u64,
    /// Payload bytes buffered, not yet handed out.
    pub queued_bytes: u64,
    /// Batches handed out and not yet acked or nacked.
    pub in_flight_batches: u64,
    /// Messages in those batches.
    pub in_flight_messages: u64,
    /// Acks whose report to the linked tracker failed.
    pub link_errors: u64,
}

/// The counts of a stop report, from `tidemark_stop_report_counts`. They balance:
/// `accepted == delivered + failed + handed_back`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct tidemark_stop_counts {
    /// Messages the buffer ever accepted.
    pub accepted: u64,
    /// Messages delivered (acked).
    pub delivered: u64,
    /// Messages failed (nacked without requeue).
    pub failed: u64,
    /// Messages handed back (read them with `tidemark_stop_report_handed_back`).
    pub handed_back: u64,
    /// Of those, messages whose batch was in flight at the deadline: the sink may or may not
    /// have stored them (outcome unknown).
    pub in_flight_unknown: u64,
    /// Batches in flight at the deadline.
    pub unknown_batches: u64,
    /// Whether the deadline passed before everything was resolved.
    pub timed_out: bool,
}

/// A message handed back by a stop.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct tidemark_handed_back {
    /// The message (its bytes are owned by the report).
    pub message: tidemark_message,
    /// It was in a batch still in flight at the deadline: the sink may have stored it.
    pub outcome_unknown: bool,
}

/// Maps a core tracker error to its status.
pub(crate) fn tracker_status(e: &TrackerError) -> tidemark_status {
    match e {
        TrackerError::OffsetRegressed { .. } => tidemark_status::OffsetRegressed,
        TrackerError::UnknownWriter(_) => tidemark_status::UnknownWriter,
        TrackerError::EvictedWriter(_) => tidemark_status::EvictedWriter,
        TrackerError::CapacityExceeded { .. } => tidemark_status::Capacity,
        TrackerError::OutOfMemory { .. } => tidemark_status::OutOfMemory,
        TrackerError::InvalidArgument(_) => tidemark_status::InvalidArgument,
    }
}

impl From<TrackerError> for tidemark_status {
    fn from(e: TrackerError) -> tidemark_status {
        tracker_status(&e)
    }
}

/// Maps a refused push to its status.
pub(crate) fn refusal_status(r: PushRefusal) -> tidemark_status {
    match r {
        PushRefusal::Full => tidemark_status::Full,
        PushRefusal::Stopping => tidemark_status::Stopping,
        PushRefusal::Closed => tidemark_status::Closed,
        PushRefusal::TooLarge => tidemark_status::TooLarge,
    }
}
