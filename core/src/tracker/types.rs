//! Public value types of the tracker: ids, options, errors, events, reports.

use std::fmt;

use crate::Offset;

/// A writer's id, allocated by [`Tracker::register`](crate::Tracker::register).
///
/// It packs a dense slot index with the slot's generation, so an id kept after
/// [`unregister`](crate::Tracker::unregister) is detected as stale and never aliases the newer
/// writer that reuses the slot.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WriterId(u64);

impl WriterId {
    pub(crate) fn new(index: u32, generation: u32) -> Self {
        WriterId(((generation as u64) << 32) | index as u64)
    }

    /// The id of slot `index` at `generation`: the inverse of [`index`](Self::index) and
    /// [`generation`](Self::generation). For models and tools that issue ids the way the tracker
    /// does; like [`from_raw`](Self::from_raw), an id the tracker never issued is reported as
    /// [`TrackerError::UnknownWriter`] when used.
    pub fn from_parts(index: u32, generation: u32) -> Self {
        WriterId::new(index, generation)
    }

    /// The dense slot index (reused after unregister).
    pub fn index(self) -> u32 {
        self.0 as u32
    }

    /// The slot generation this id was issued for.
    pub fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// The id as one integer, for hosts that store it (the C ABI, the bindings).
    pub fn to_raw(self) -> u64 {
        self.0
    }

    /// Rebuilds an id from [`to_raw`](Self::to_raw). Any value is accepted; one the tracker never
    /// issued is reported as [`TrackerError::UnknownWriter`] when used.
    pub fn from_raw(raw: u64) -> Self {
        WriterId(raw)
    }
}

impl fmt::Debug for WriterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WriterId({}#{})", self.index(), self.generation())
    }
}

impl fmt::Display for WriterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.index(), self.generation())
    }
}

/// Construction options of a [`Tracker`](crate::Tracker).
#[derive(Clone, Debug)]
pub struct TrackerOptions {
    /// The position already acknowledged upstream (e.g. the slot's confirmed flush position).
    /// The ack starts there, and commits must have a larger `tx`.
    pub initial_ack: Option<u64>,
    /// Capacity hint: slots allocated up front.
    pub expected_writers: usize,
    /// Hard limit of registered writers; `register` past it fails with `CapacityExceeded`.
    pub max_writers: usize,
    /// A pending writer without progress for longer than this (strictly) is stale. Default 60 000.
    pub stall_grace_ms: u64,
    /// Events kept for `take_events` before challenge and removal events are dropped (and
    /// counted). Evictions are always kept.
    pub event_capacity: usize,
}

impl Default for TrackerOptions {
    fn default() -> Self {
        TrackerOptions {
            initial_ack: None,
            expected_writers: 0,
            max_writers: u32::MAX as usize,
            stall_grace_ms: 60_000,
            event_capacity: 65_536,
        }
    }
}

/// Why a call was rejected. A rejected call changes nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrackerError {
    /// A commit's `tx` did not exceed the previous commit's (or the initial ack).
    OffsetRegressed {
        /// The previous commit's `tx` (or the initial ack).
        last: u64,
        /// The rejected commit's `tx`.
        offered: u64,
    },
    /// The id was never issued, or was unregistered (stale generation).
    UnknownWriter(WriterId),
    /// The writer was evicted; its id is dead until unregistered.
    EvictedWriter(WriterId),
    /// `max_writers` writers are registered already.
    CapacityExceeded {
        /// The configured limit.
        max_writers: usize,
    },
    /// Options or arguments out of range.
    InvalidArgument(&'static str),
    /// The allocator refused memory the call needed (nothing changed).
    OutOfMemory {
        /// The size of the allocation that failed.
        bytes: usize,
    },
}

impl TrackerError {
    /// A stable snake_case code (used by `tidemark replay` and the bindings).
    pub fn code(&self) -> &'static str {
        match self {
            TrackerError::OffsetRegressed { .. } => "offset_regressed",
            TrackerError::UnknownWriter(_) => "unknown_writer",
            TrackerError::EvictedWriter(_) => "evicted",
            TrackerError::CapacityExceeded { .. } => "capacity_exceeded",
            TrackerError::InvalidArgument(_) => "invalid_argument",
            TrackerError::OutOfMemory { .. } => "out_of_memory",
        }
    }
}

impl fmt::Display for TrackerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrackerError::OffsetRegressed { last, offered } => write!(
                f,
                "commit tx {offered} does not exceed the previous commit's tx {last}"
            ),
            TrackerError::UnknownWriter(w) => write!(f, "unknown or stale writer {w}"),
            TrackerError::EvictedWriter(w) => write!(f, "writer {w} was evicted"),
            TrackerError::CapacityExceeded { max_writers } => {
                write!(f, "all {max_writers} writer slots are in use")
            }
            TrackerError::InvalidArgument(what) => write!(f, "invalid argument: {what}"),
            TrackerError::OutOfMemory { bytes } => {
                write!(f, "out of memory: an allocation of {bytes} bytes failed")
            }
        }
    }
}

impl std::error::Error for TrackerError {}

/// How the host learned that a writer is gone (`Tracker::down`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DownClass {
    /// The writer crashed: evict it now (unpin) and report the eviction.
    Crash,
    /// A deliberate removal is under way: unpin only, report `Removed`.
    Cleanup,
    /// Shutdown or killed with no process left: keep it pinned (a rolling deploy must not
    /// mass-evict) but mark it orphaned; the first sweep past the grace period evicts it
    /// without a challenge.
    Teardown,
}

/// Why a writer was evicted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EvictReason {
    /// A `crash` down.
    Crashed,
    /// A `teardown` down, then no progress for longer than the grace period.
    Orphaned,
    /// Challenged by a sweep, no answer, still past the grace period at the next sweep.
    Stalled,
}

impl EvictReason {
    /// A stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            EvictReason::Crashed => "crashed",
            EvictReason::Orphaned => "orphaned",
            EvictReason::Stalled => "stalled",
        }
    }

    pub(crate) fn to_u8(self) -> u8 {
        match self {
            EvictReason::Crashed => 1,
            EvictReason::Orphaned => 2,
            EvictReason::Stalled => 3,
        }
    }

    pub(crate) fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(EvictReason::Crashed),
            2 => Some(EvictReason::Orphaned),
            3 => Some(EvictReason::Stalled),
            _ => None,
        }
    }
}

/// Something the host must hear about, drained with `Tracker::take_events`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    /// A sweep found the writer past the grace period: is it deferring on purpose? Answer with
    /// `touch`, or it is evicted at the next sweep.
    Challenged(WriterId),
    /// The writer was evicted: it no longer pins the ack and its id is dead. Its unflushed work
    /// was NOT counted as flushed: re-dispatch or invalidate it.
    Evicted(WriterId, EvictReason),
    /// A `cleanup` down unpinned the writer.
    Removed(WriterId),
}

/// What a writer is doing, as seen by `Tracker::writer_status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriterStatus {
    /// Registered, owes nothing.
    Idle,
    /// Owes at least one commit.
    Pending,
    /// Evicted (the id is dead until unregistered).
    Evicted(EvictReason),
}

/// The writer holding the ack back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pinning {
    /// The writer.
    pub writer: WriterId,
    /// The commit it owes that holds the ack (the ack is its `tx − 1`).
    pub owes: Offset,
    /// The highest offset it reported, if any.
    pub flushed: Option<Offset>,
    /// Milliseconds since its last progress (0 if `now` is earlier).
    pub ms_since_progress: u64,
    /// Paused by the host.
    pub paused: bool,
    /// Challenged by a sweep and not answered yet.
    pub challenged: bool,
    /// Reported gone (`teardown`), waiting for a sweep.
    pub orphaned: bool,
}

/// Counts of what one `sweep` did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepOutcome {
    /// Writers challenged.
    pub challenged: usize,
    /// Writers evicted (orphaned or stalled).
    pub evicted: usize,
}

/// A snapshot of the tracker's counters and state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrackerStats {
    /// The ack.
    pub ack: Option<u64>,
    /// The last commit's offset.
    pub last_seen: Option<Offset>,
    /// `last_seen.tx − ack` (how much log the source must retain).
    pub ack_lag: Option<u64>,
    /// How many times the ack moved.
    pub ack_advances: u64,
    /// Milliseconds of wall time since the ack last moved (`None` if it never did).
    pub ms_since_ack_moved: Option<u64>,
    /// Writers registered (including evicted ones not yet unregistered).
    pub registered: u64,
    /// Writers pending.
    pub pending: u64,
    /// Commits accepted.
    pub commits: u64,
    /// Flush reports accepted (including late ones).
    pub flushes: u64,
    /// Flush reports for writers that were not pending (ignored).
    pub late_flushes: u64,
    /// `remove` and `cleanup` downs.
    pub removes: u64,
    /// Challenges issued by sweeps.
    pub challenges: u64,
    /// Evictions after a `crash` down.
    pub evicted_crashed: u64,
    /// Evictions of orphaned (`teardown`) writers.
    pub evicted_orphaned: u64,
    /// Evictions of stalled writers.
    pub evicted_stalled: u64,
    /// Challenge and removal events dropped because the event queue was full.
    pub events_dropped: u64,
    /// Age in ms of the oldest progress among pending, unpaused writers.
    pub oldest_progress_age_ms: Option<u64>,
    /// The writer pinning the ack.
    pub pinning: Option<Pinning>,
}

/// What calls did to the delivery log (`Tracker::work_stats`): the evidence that every call does
/// bounded work, for tests and hosts that watch it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkStats {
    /// The most deliveries one call may examine (pop, judge or compact).
    pub budget: u64,
    /// Deliveries popped at the head of the log, in all.
    pub deliveries_popped: u64,
    /// Deliveries examined by compaction, in all.
    pub entries_scanned: u64,
    /// The most deliveries any single call examined so far (never above `budget`).
    pub max_call_work: u64,
    /// Calls that stopped at the budget and left a backlog for later calls.
    pub backlogs: u64,
    /// A drain backlog or a compaction pass is waiting for later calls (`run_backlog`).
    pub backlog: bool,
    /// Deliveries in the log now.
    pub log_len: u64,
}
