//! The flush tracker and its staleness sweeps (the contract: `docs/ARCHITECTURE.md`).
//!
//! # Structures
//!
//! - **Writer cells** ([`cell`]): 16 bytes per registered writer: generation, status, flags,
//!   and a binding to the entry of its latest stint.
//! - **Pending entries** ([`entry`]): one 64-byte entry per *pending* writer in a dense table
//!   that follows the peak pending count. Every decision about a stint is one CAS on the
//!   entry's state word; a flush that completes a writer is that CAS and nothing else shared.
//! - **Delivery log** ([`log`]): `(entry, tag, offset)` per delivery in commit order, in chunks;
//!   the committer appends, the drain-token holder pops the done ones at the head (RocksDB's
//!   prepared-heap trick: offsets are dispensed in order, so a FIFO with lazy deletion gives
//!   the exact minimum) and compacts, so memory follows unflushed deliveries.
//! - **Drain token** ([`drain`]): one word; its holder alone runs the log and writes the ack,
//!   within a budget per call. It parks on the head delivery's entry (`HEAD` bit), so only a
//!   change of *that* stint asks for it: every other flush touches no shared line but its own
//!   entry and a striped counter.
//! - **Ack**: one atomic word (`ack + 1`, 0 = none), written by the token holder only, so it is
//!   monotonic by construction; readers do a single load.
//! - **Sweep index** ([`stale`]): a lazy min-heap of `(progress_at, entry, tag)`.
//!
//! The memory-ordering argument is in `docs/MEMORY_ORDERING.md` and at each atomic below.
//!
//! # Files
//!
//! This file holds the tracker's state and its construction; its methods are split by concern,
//! one `impl` block each: [`writers`] (register, unregister, status), [`flush`] (commit, flush
//! reports, remove), [`query`] (ack, wait, pinning, statistics), [`stale`] (liveness signals and
//! sweeps), [`drain`] (the token holder's work on the log), and [`stint`] (the internals they
//! share: id lookup, the writer ↔ stint binding, entry reservation).

mod cell;
mod counters;
mod drain;
mod entry;
mod flush;
mod log;
mod query;
mod seg;
mod stale;
mod stint;
mod types;
mod writers;

use crate::Offset;
use crate::sync::{
    AtomicU64, AtomicUsize, CachePadded, Condvar, Mutex, Ordering, SpinLock, UnsafeCell, fence,
};

use cell::Cell;
use counters::FlushCounters;
use drain::HeadRecord;
use entry::{Entry, State};
use log::{Consumer, LogShared, Producer};
use seg::{AllocFailed, Segmented};
use stale::{IndexEntry, Staleness};
pub use types::{
    DownClass, Event, EvictReason, Pinning, SweepOutcome, TrackerError, TrackerOptions,
    TrackerStats, WorkStats, WriterId, WriterStatus,
};

/// Writer cells in the first segment (the table doubles from there).
const CELL_BASE_SHIFT: u32 = if crate::sync::LOOM { 1 } else { 10 };
/// Pending entries in the first segment.
const ENTRY_BASE_SHIFT: u32 = if crate::sync::LOOM { 1 } else { 6 };
/// Entries the allocator looks at before it grows the table (so the table stays at most about
/// 7/8 full and an allocation looks at a couple of entries on average).
const CLOCK_SCAN: u32 = 8;
/// Stripes of the stint-end counter (by writer index), so concurrent removals and evictions of
/// different writers rarely share a line.
const STRIPES: usize = if crate::sync::LOOM { 1 } else { 16 };

/// A counter with exactly one writer at a time (the committer, or the token holder): a load
/// and a store, no read-modify-write.
#[derive(Default)]
struct SoloCounter(AtomicU64);

impl SoloCounter {
    #[inline]
    fn add_holder(&self, n: u64) {
        // Relaxed: a statistic; its writers are serialised by the commit lock or the drain
        // token, whose Acquire/Release order consecutive writers.
        let v = self.0.load(Ordering::Relaxed);
        self.0.store(v + n, Ordering::Relaxed);
    }
    #[inline]
    fn get(&self) -> u64 {
        // Relaxed: a statistic.
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
struct Counters {
    commits: SoloCounter,
    started: SoloCounter,
    ack_advances: SoloCounter,
    removes: AtomicU64,
    challenges: AtomicU64,
    evicted: EvictionCounts,
}

/// Evictions by reason (statistics, Relaxed).
#[derive(Default)]
struct EvictionCounts {
    crashed: AtomicU64,
    orphaned: AtomicU64,
    stalled: AtomicU64,
}

impl EvictionCounts {
    fn of(&self, reason: EvictReason) -> &AtomicU64 {
        match reason {
            EvictReason::Crashed => &self.crashed,
            EvictReason::Orphaned => &self.orphaned,
            EvictReason::Stalled => &self.stalled,
        }
    }
}

/// Work counters: what calls did to the log, for tests that prove the per-call bound.
#[derive(Default)]
struct Work {
    popped: SoloCounter,
    scanned: SoloCounter,
    backlogs: SoloCounter,
    max_call: AtomicU64,
}

impl Work {
    fn record_call(&self, work: u64) {
        // Relaxed: a statistic; the load filters out the common case without an RMW.
        if work > self.max_call.load(Ordering::Relaxed) {
            self.max_call.fetch_max(work, Ordering::Relaxed);
        }
    }
}

/// `last_seen` for `last_seen()` and `stats()`, written by the committer only (a seqlock), so
/// readers never wait for a commit.
#[derive(Default)]
struct SeenRecord {
    seq: AtomicU64,
    /// `tx + 1`; 0 = no commit yet.
    tx1: AtomicU64,
    op: AtomicU64,
}

impl SeenRecord {
    fn write(&self, offset: Offset) {
        // Relaxed: only the committer writes.
        let seq = self.seq.load(Ordering::Relaxed);
        self.seq.store(seq + 1, Ordering::Relaxed);
        // Seqlock write: odd sequence, Release fence, fields, even sequence with Release.
        fence(Ordering::Release);
        self.tx1.store(offset.tx + 1, Ordering::Relaxed);
        self.op.store(offset.op, Ordering::Relaxed);
        self.seq.store(seq + 2, Ordering::Release);
    }

    fn read(&self) -> Option<Offset> {
        loop {
            // Acquire: pairs with the final Release store of `seq` in `write`.
            let s1 = self.seq.load(Ordering::Acquire);
            if s1 & 1 == 1 {
                crate::sync::spin_hint();
                continue;
            }
            let tx1 = self.tx1.load(Ordering::Relaxed);
            let op = self.op.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == s1 {
                return tx1.checked_sub(1).map(|tx| Offset::new(tx, op));
            }
        }
    }
}

struct Registry {
    free: Vec<u32>,
    next: u64,
    registered: u64,
}

/// State behind the commit lock: the producer half of the log, the entry allocator, and
/// reused buffers. Only committers take it (and a sweep, briefly, to collect new stints).
struct Committer {
    /// The previous commit's tx, or `initial_ack`: the next commit must exceed it.
    last_tx: Option<u64>,
    producer: Producer,
    /// Entries reserved (`RESERVED`, not `LIVE`) for the next new stints.
    ready: Vec<u32>,
    /// The allocator's clock hand over the entry table, and the table's size.
    clock: u32,
    capacity: u32,
    /// New stints not yet handed to the sweep index.
    fresh: Vec<IndexEntry>,
    /// The incremental clean-up of `fresh` (see `tidy_fresh`): read position + 1 (0 = no pass
    /// under way) and entries kept so far.
    fresh_scan: usize,
    fresh_kept: usize,
    /// This commit's writers as validated: reused buffer.
    plan: Vec<Planned>,
}

/// One writer of the commit being applied, as validation found it.
#[derive(Clone, Copy)]
struct Planned {
    writer: WriterId,
    /// The writer's cell (cells never move or go away while the tracker lives).
    cell: *const Cell,
    /// The binding word at validation, and the live stint it named, if any.
    bind: u64,
    live: Option<(u32, u32)>,
}

// SAFETY: `cell` points into the tracker's own cell table, valid for the tracker's lifetime
// and shared-safe (atomics only); the plan moves with the committer state.
unsafe impl Send for Planned {}

/// The flush-offset tracker.
///
/// One thread commits; any number of threads report flushes, remove, down, touch, sweep, read
/// the ack and take events, concurrently. All methods take `&self`; share it with an `Arc`.
///
/// ```
/// use tidemark::{Offset, Tracker};
/// let t = Tracker::default();
/// let (a, b) = (t.register().unwrap(), t.register().unwrap());
/// t.commit(Offset::new(10, 3), &[a, b], 0).unwrap();
/// t.commit(Offset::new(11, 1), &[b], 0).unwrap();
/// t.flushed(b, Offset::new(11, 1), 5).unwrap();
/// assert_eq!(t.ack(), Some(9)); // `a` still owes commit 10
/// t.flushed(a, Offset::new(10, 3), 6).unwrap();
/// assert_eq!(t.ack(), Some(11));
/// ```
pub struct Tracker {
    cells: Segmented<Cell, CELL_BASE_SHIFT>,
    entries: Segmented<Entry, ENTRY_BASE_SHIFT>,
    /// `progress_at` of each entry's stint (parallel to `entries`): written by the committer
    /// when a stint starts and by the `MUT` holder; read by sweeps.
    progress: Segmented<AtomicU64, ENTRY_BASE_SHIFT>,
    registry: Mutex<Registry>,
    /// The committer's state. Also taken, briefly, by a sweep collecting new stints, by
    /// evictions and unregistrations of idle writers, and by a drain leaving an empty log, so
    /// those serialise with commits instead of racing them.
    committer: SpinLock<Committer>,
    log: LogShared,
    /// The consumer half of the log; only the drain-token holder touches it.
    consumer: UnsafeCell<Consumer>,
    /// The drain token (see [`drain`]).
    drain: CachePadded<AtomicU64>,
    head: HeadRecord,
    /// The ack plus one; 0 means none yet.
    ack: CachePadded<AtomicU64>,
    seen: SeenRecord,
    /// The newest commit's `now` (committer), and when the ack last moved, plus one (holder).
    last_now: AtomicU64,
    ack_moved_at: AtomicU64,
    waiters: AtomicUsize,
    wait_lock: Mutex<()>,
    wait_cv: Condvar,
    stale: Staleness,
    counters: Counters,
    flushes: FlushCounters,
    /// Stints ended other than by a flush (remove, cleanup, eviction, unregister), striped.
    ends: [CachePadded<AtomicU64>; STRIPES],
    work: Work,
    /// Deliveries one call may examine (see [`drain`]).
    budget: AtomicUsize,
    max_writers: usize,
}

// SAFETY: every field is shared-safe except `consumer`, which only the drain-token holder
// touches (one thread at a time, ordered by the token's Acquire/Release), and the plan's cell
// pointers, which point into our own table; the chunks are owned by the tracker.
unsafe impl Sync for Tracker {}
// SAFETY: the tracker owns everything it points to (chunks, segments).
unsafe impl Send for Tracker {}

impl Default for Tracker {
    fn default() -> Self {
        Tracker::new(TrackerOptions::default()).expect("default options are valid")
    }
}

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracker")
            .field("ack", &self.ack())
            .field("pending", &self.pending())
            .finish_non_exhaustive()
    }
}

impl From<AllocFailed> for TrackerError {
    fn from(e: AllocFailed) -> Self {
        TrackerError::OutOfMemory { bytes: e.bytes }
    }
}

/// How a writer's latest binding looks now.
enum Bound<'a> {
    /// Not pending.
    Idle,
    /// Pending: the stint's entry and tag, and the state as read.
    Live {
        entry: &'a Entry,
        index: u32,
        tag: u32,
        state: State,
    },
}

impl Tracker {
    /// Builds a tracker. Fails with `InvalidArgument` when `max_writers` is 0 or above
    /// `u32::MAX`, `expected_writers > max_writers`, or `initial_ack` is `u64::MAX`, and with
    /// `OutOfMemory` when the cells for `expected_writers` cannot be allocated.
    pub fn new(options: TrackerOptions) -> Result<Tracker, TrackerError> {
        if options.max_writers == 0 || options.max_writers > u32::MAX as usize {
            return Err(TrackerError::InvalidArgument(
                "max_writers must be in 1..=u32::MAX",
            ));
        }
        if options.expected_writers > options.max_writers {
            return Err(TrackerError::InvalidArgument(
                "expected_writers must not exceed max_writers",
            ));
        }
        if options.initial_ack == Some(u64::MAX) {
            return Err(TrackerError::InvalidArgument(
                "initial_ack must be below u64::MAX",
            ));
        }
        let cells = Segmented::new();
        if options.expected_writers > 0 {
            cells.ensure((options.expected_writers - 1) as u32)?;
        }
        let entries = Segmented::new();
        let progress = Segmented::new();
        entries.ensure(0)?;
        progress.ensure(0)?;
        let capacity = entries.capacity() as u32;
        let (log, producer, consumer) = log::new()?;
        Ok(Tracker {
            cells,
            entries,
            progress,
            registry: Mutex::new(Registry {
                free: Vec::new(),
                next: 0,
                registered: 0,
            }),
            committer: SpinLock::new(Committer {
                last_tx: options.initial_ack,
                producer,
                ready: Vec::new(),
                clock: 0,
                capacity,
                fresh: Vec::new(),
                fresh_scan: 0,
                fresh_kept: 0,
                plan: Vec::new(),
            }),
            log,
            consumer: UnsafeCell::new(consumer),
            drain: CachePadded::new(AtomicU64::new(drain::IDLE)),
            head: HeadRecord::default(),
            ack: CachePadded::new(AtomicU64::new(options.initial_ack.map_or(0, |a| a + 1))),
            seen: SeenRecord::default(),
            last_now: AtomicU64::new(0),
            ack_moved_at: AtomicU64::new(0),
            waiters: AtomicUsize::new(0),
            wait_lock: Mutex::new(()),
            wait_cv: Condvar::new(),
            stale: Staleness::new(options.stall_grace_ms, options.event_capacity),
            counters: Counters::default(),
            flushes: FlushCounters::new(),
            ends: std::array::from_fn(|_| CachePadded::new(AtomicU64::new(0))),
            work: Work::default(),
            budget: AtomicUsize::new(drain::BUDGET),
            max_writers: options.max_writers,
        })
    }
}

/// A binding followed to a stint that an eviction (still finishing) ended.
struct EvictedBy(EvictReason);

impl Drop for Tracker {
    fn drop(&mut self) {
        let producer = &mut self.committer.get_mut().producer;
        let log = &self.log;
        self.consumer.with_mut(|p| {
            // SAFETY: `&mut self`: no other thread can hold the token or touch the log.
            unsafe { &mut *p }.free_all(producer, log);
        });
    }
}

#[cfg(all(test, not(tidemark_loom)))]
mod tests;
