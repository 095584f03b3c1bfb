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

mod cell;
mod counters;
mod drain;
mod entry;
mod log;
mod seg;
mod stale;
mod types;

use std::time::{Duration, Instant};

use crate::Offset;
use crate::sync::{
    AtomicU64, AtomicUsize, CachePadded, Condvar, Mutex, Ordering, SpinLock, UnsafeCell, fence,
};

use cell::{Bind, Cell, Meta, Status};
use counters::{Block, FlushCounters};
use drain::HeadRecord;
use entry::{CHALLENGED, Entry, HAS_FLUSHED, HEAD, MUT, RESERVED, State};
use log::{Consumer, Delivery, LogShared, Producer};
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
    evicted: [AtomicU64; 3],
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

    // ----- writers -------------------------------------------------------------------------

    /// Registers a new writer. Fails with `CapacityExceeded` past `max_writers`, and with
    /// `OutOfMemory` when the cell table cannot grow (nothing changes then).
    pub fn register(&self) -> Result<WriterId, TrackerError> {
        match self.register_with(true)? {
            Some(id) => Ok(id),
            None => unreachable!("register_with(true) allocates instead of declining"),
        }
    }

    /// Registers a new writer only if that needs no allocation: `Ok(None)` (nothing changed)
    /// when the cell table would have to grow first. O(1) and allocation-free, so a host that
    /// must not allocate on the calling thread (a BEAM scheduler) can try this first and fall
    /// back to [`register`](Self::register) elsewhere. Errors as `register`.
    pub fn register_if_allocated(&self) -> Result<Option<WriterId>, TrackerError> {
        self.register_with(false)
    }

    fn register_with(&self, may_allocate: bool) -> Result<Option<WriterId>, TrackerError> {
        let mut reg = self.registry.lock();
        if reg.registered as usize >= self.max_writers {
            return Err(TrackerError::CapacityExceeded {
                max_writers: self.max_writers,
            });
        }
        let index = match reg.free.pop() {
            Some(i) => i,
            None => {
                if reg.next >= self.max_writers as u64 {
                    // Every index below the limit is in use or retired (generation exhausted).
                    return Err(TrackerError::CapacityExceeded {
                        max_writers: self.max_writers,
                    });
                }
                if self.cells.get(reg.next as u32).is_none() {
                    if !may_allocate {
                        return Ok(None);
                    }
                    // Zeroed segments: O(1) even when the table doubles.
                    self.cells.ensure(reg.next as u32)?;
                }
                reg.next += 1;
                (reg.next - 1) as u32
            }
        };
        reg.registered += 1;
        let cell = self.cells.get(index).expect("ensured above");
        // Relaxed load: free cells' meta only changes under the registry lock (we hold it).
        let meta = Meta(cell.meta.load(Ordering::Relaxed));
        debug_assert_eq!(meta.status(), Status::Free);
        let generation = meta.generation();
        // Release: a thread that looks the new id up (after learning it from us through some
        // synchronising channel) sees the cell registered. A plain store is enough: nobody CASes
        // a free cell's meta (every CAS follows a successful lookup of a registered id).
        cell.meta
            .store(Meta::registered(generation).0, Ordering::Release);
        Ok(Some(WriterId::new(index, generation)))
    }

    /// Releases a writer's id (any status, evicted included). If it was pending it unpins now,
    /// like `remove`. The id is stale afterwards: using it fails with `UnknownWriter`.
    pub fn unregister(&self, writer: WriterId) -> Result<(), TrackerError> {
        let cell = self.cell(writer)?;
        // Under the commit lock: a commit either saw the writer registered and finished (its
        // stint is ended below), or sees it unregistered.
        let committer = self.committer.lock();
        let mut reg = self.registry.lock();
        let mut meta = Meta(cell.meta.load(Ordering::Acquire));
        let next_gen = loop {
            if !meta.holds(writer) {
                return Err(TrackerError::UnknownWriter(writer));
            }
            let next_gen = writer.generation().wrapping_add(1);
            // AcqRel: the linearisation point of the unregister; ordered with flags and
            // evictions changing the same word.
            match cell.meta.compare_exchange(
                meta.0,
                Meta::free(next_gen).0,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break next_gen,
                Err(actual) => meta = Meta(actual),
            }
        };
        reg.registered -= 1;
        if next_gen != 0 {
            reg.free.push(writer.index());
        }
        drop(reg);
        // `Err`: an eviction is ending the stint right now; it unpins it either way.
        let ended = match self.bound(cell, writer) {
            Ok(Bound::Live { entry, tag, .. }) => self.end_stint_quiet(entry, tag, writer, None),
            _ => None,
        };
        drop(committer);
        // One budget per call: a call that drained for the released head helps no backlog.
        if ended.is_some_and(|s| s.has(HEAD)) {
            self.head_released(None);
        } else {
            self.help_backlog(None);
        }
        Ok(())
    }

    /// What the writer is doing.
    pub fn writer_status(&self, writer: WriterId) -> Result<WriterStatus, TrackerError> {
        let cell = self.cell(writer)?;
        let meta = Meta(cell.meta.load(Ordering::Acquire));
        if !meta.holds(writer) {
            return Err(TrackerError::UnknownWriter(writer));
        }
        if meta.status() == Status::Evicted {
            return Ok(WriterStatus::Evicted(
                meta.reason().expect("evicted cells record a reason"),
            ));
        }
        Ok(match self.bound(cell, writer) {
            Ok(Bound::Live { .. }) => WriterStatus::Pending,
            Ok(Bound::Idle) => WriterStatus::Idle,
            Err(EvictedBy(reason)) => WriterStatus::Evicted(reason),
        })
    }

    // ----- the flush path -------------------------------------------------------------------

    /// Hands a commit (its *last* offset) to the tracker with the writers it was delivered to.
    ///
    /// `offset.tx` must exceed the previous commit's `tx` (else `OffsetRegressed`); every writer
    /// must be registered and not evicted (else `UnknownWriter` / `EvictedWriter`). A rejected
    /// commit changes nothing. Each listed writer that is not pending becomes pending with
    /// `progress_at = now`; one already pending just owes this commit too. Only one thread may
    /// commit at a time (calls from several threads are serialised, not ordered).
    pub fn commit(
        &self,
        offset: Offset,
        writers: &[WriterId],
        now: u64,
    ) -> Result<(), TrackerError> {
        if offset.tx == u64::MAX {
            return Err(TrackerError::InvalidArgument(
                "commit tx must be below u64::MAX",
            ));
        }
        let mut guard = self.committer.lock();
        let cs = &mut *guard;
        if let Some(last) = cs.last_tx
            && offset.tx <= last
        {
            return Err(TrackerError::OffsetRegressed {
                last,
                offered: offset.tx,
            });
        }
        // Touch every writer's cell first: independent loads overlap their cache misses (at
        // 10^6 writers the cells do not fit in the cache), where the dependent work below would
        // take them one after another.
        for &w in writers {
            if let Some(cell) = self.cells.get(w.index()) {
                // Relaxed: the value is discarded; only the memory access matters.
                std::hint::black_box(cell.meta.load(Ordering::Relaxed));
            }
        }
        // Validate every writer before changing anything, and note what each looks like.
        let mut plan = std::mem::take(&mut cs.plan);
        plan.clear();
        for &w in writers {
            let cell = self.cell(w)?;
            Meta(cell.meta.load(Ordering::Acquire)).check(w)?;
            // Relaxed: only the committer (us) writes bindings.
            let bind = cell.bind.load(Ordering::Relaxed);
            let live = match self.bound(cell, w) {
                Ok(Bound::Live { index, tag, .. }) => Some((index, tag)),
                Ok(Bound::Idle) => None,
                Err(EvictedBy(_)) => return Err(TrackerError::EvictedWriter(w)),
            };
            plan.push(Planned {
                writer: w,
                cell,
                bind,
                live,
            });
        }
        // Room for every delivery and a free entry per writer, so nothing below can fail.
        let reserved = cs
            .producer
            .reserve(writers.len(), &self.log)
            .and_then(|()| self.reserve_entries(cs, writers.len()));
        if let Err(e) = reserved {
            cs.plan = plan;
            return Err(e.into());
        }
        let mut pushed = 0;
        for p in &plan {
            // SAFETY: cells never move or go away while the tracker lives (see `Planned`).
            let cell = unsafe { &*p.cell };
            let target = match p.live {
                Some((index, tag)) if self.entry(index).extend(tag, offset).is_ok() => {
                    Some((index, tag))
                }
                // Relaxed: only we write bindings. Unchanged: still idle (an idle writer cannot
                // be evicted or unregistered during a commit: those take the commit lock).
                None if cell.bind.load(Ordering::Relaxed) == p.bind => {
                    Some(self.start_stint(cs, cell, p.writer, offset, now))
                }
                // Listed twice, or its stint ended since validation.
                _ => self.redeliver(cs, cell, p.writer, offset, now),
            };
            if let Some((index, tag)) = target {
                cs.producer.push(Delivery {
                    entry: index,
                    tag,
                    offset,
                });
                pushed += 1;
            }
        }
        cs.plan = plan;
        // Publish the deliveries (edge L1), then `last_seen` for readers.
        cs.producer.publish(pushed, &self.log);
        self.seen.write(offset);
        cs.last_tx = Some(offset.tx);
        // Relaxed: a statistic (and the `now` for ack moves of calls without one).
        if now > self.last_now.load(Ordering::Relaxed) {
            self.last_now.store(now, Ordering::Relaxed);
        }
        self.counters.commits.add_holder(1);
        if cs.fresh.len() > stale::TIDY_AT {
            self.tidy_fresh(cs);
        }
        let compact = self.log.wants_compaction();
        drop(guard);
        // Edge D2: a drain leaves the token IDLE only under the commit lock, after seeing the
        // log empty; so either it saw our deliveries, or we see IDLE here and drain. BACKLOG:
        // continue it. PARKED with compaction due: take the token from the parked entry.
        // Relaxed: ordered after any IDLE store by the commit lock; `take_token` decides.
        let state = self.drain.load(Ordering::Relaxed);
        let held = match state {
            drain::IDLE | drain::BACKLOG => self.take_token(),
            drain::PARKED if compact => self.steal_parked(),
            _ => false,
        };
        if held {
            self.hold(Some(now), compact);
        }
        Ok(())
    }

    /// A planned writer whose binding changed since validation: deliver to its live stint, or
    /// start one, or skip it if an eviction ended its stint meanwhile (the commit is then
    /// linearised before the eviction, which ended everything the writer owed).
    fn redeliver(
        &self,
        cs: &mut Committer,
        cell: &Cell,
        w: WriterId,
        offset: Offset,
        now: u64,
    ) -> Option<(u32, u32)> {
        loop {
            match self.bound(cell, w) {
                Ok(Bound::Live {
                    entry, index, tag, ..
                }) => {
                    if entry.extend(tag, offset).is_ok() {
                        return Some((index, tag));
                    }
                }
                Ok(Bound::Idle) => {
                    // An eviction that finished (cell marked, `EVICTING` lifted) before we
                    // looked: the Acquire state load above orders its cell update before this.
                    if Meta(cell.meta.load(Ordering::Acquire)).check(w).is_err() {
                        return None;
                    }
                    return Some(self.start_stint(cs, cell, w, offset, now));
                }
                Err(EvictedBy(_)) => return None,
            }
        }
    }

    /// Reports that `writer` flushed everything up to `offset` (at caller time `now`, ms).
    ///
    /// Ignored (but counted) when the writer is not pending. `offset >= last_sent` completes the
    /// writer; a higher partial report is progress; a lower one changes nothing. Lock-free: it
    /// changes only the writer's own entry (one CAS to complete, two for progress), and drains
    /// only when this writer pins the ack.
    pub fn flushed(&self, writer: WriterId, offset: Offset, now: u64) -> Result<(), TrackerError> {
        let cell = self.cell(writer)?;
        Meta(cell.meta.load(Ordering::Acquire)).check(writer)?;
        let (entry, index, tag, mut s) = match self.bound(cell, writer) {
            Ok(Bound::Live {
                entry,
                index,
                tag,
                state,
            }) => (entry, index, tag, state),
            Ok(Bound::Idle) => {
                self.flushes.with(|b| Block::bump(&b.late));
                self.help_backlog(Some(now));
                return Ok(());
            }
            Err(EvictedBy(_)) => return Err(TrackerError::EvictedWriter(writer)),
        };
        let mut backoff = crate::sync::Backoff::new();
        let held = loop {
            if !s.is_stint(tag) {
                // Ended since we looked: by an eviction (reject, as if it came first) or by
                // a completion or removal (a late report).
                if let Err(EvictedBy(_)) = self.bound(cell, writer) {
                    return Err(TrackerError::EvictedWriter(writer));
                }
                self.flushes.with(|b| Block::bump(&b.late));
                self.help_backlog(Some(now));
                return Ok(());
            }
            if s.has(MUT) {
                backoff.snooze();
                s = entry.load();
                continue;
            }
            if offset >= entry.sent(s) {
                match entry.cas(s, s.ended(None)) {
                    Ok(()) => {
                        // Also counts the stint's end (for `pending`).
                        self.flushes.with(|b| Block::bump(&b.completions));
                        if s.has(HEAD) {
                            self.head_released(Some(now));
                        } else {
                            self.help_backlog(Some(now));
                        }
                        return Ok(());
                    }
                    Err(actual) => {
                        s = actual;
                        continue;
                    }
                }
            }
            if s.has(HAS_FLUSHED) && offset <= entry.flushed_bound() {
                // No progress: the newest report is at least this one.
                self.flushes.with(|b| Block::bump(&b.other));
                self.help_backlog(Some(now));
                return Ok(());
            }
            match entry.cas(s, s.with(MUT, 0)) {
                Ok(()) => break s.with(MUT, 0),
                Err(actual) => s = actual,
            }
        };
        // We hold MUT: `flushed_*` and `progress_at` are ours to write. `last_sent` can only
        // have grown since we compared, so this is still a partial report.
        let (set, clear) = if held.has(HAS_FLUSHED) && offset <= entry.flushed_bound() {
            (0, 0)
        } else {
            entry.write_flushed(offset);
            let p = self.progress_of(index);
            // Relaxed: read by sweeps after they load the state (Acquire), which our release
            // CAS below publishes.
            if now > p.load(Ordering::Relaxed) {
                p.store(now, Ordering::Relaxed);
            }
            (HAS_FLUSHED, CHALLENGED | HEAD)
        };
        let before = entry.release(held, set, clear);
        self.flushes.with(|b| Block::bump(&b.other));
        if clear & HEAD != 0 && before.has(HEAD) {
            self.head_released(Some(now));
        } else {
            self.help_backlog(Some(now));
        }
        Ok(())
    }

    /// The writer is gone: it unpins now (everything it owed counts as done). It stays
    /// registered and may receive later commits.
    pub fn remove(&self, writer: WriterId) -> Result<(), TrackerError> {
        let cell = self.cell(writer)?;
        Meta(cell.meta.load(Ordering::Acquire)).check(writer)?;
        self.counters.removes.fetch_add(1, Ordering::Relaxed);
        match self.end_bound_stint(cell, writer, None, None) {
            Err(EvictedBy(_)) => return Err(TrackerError::EvictedWriter(writer)),
            // It drained for the head it released: that was this call's budget.
            Ok(true) => {}
            Ok(false) => self.help_backlog(None),
        }
        Ok(())
    }

    /// The position the host may acknowledge upstream: every commit with `tx <= ack` was
    /// flushed by every writer it was delivered to. `None` until the first ack (or the
    /// `initial_ack`). One atomic load.
    #[inline]
    pub fn ack(&self) -> Option<u64> {
        // Acquire: pairs with the Release in `publish_ack`.
        self.ack.load(Ordering::Acquire).checked_sub(1)
    }

    /// How many times the ack moved; compare two readings to learn that it advanced.
    pub fn ack_generation(&self) -> u64 {
        self.counters.ack_advances.get()
    }

    /// Blocks until the ack exceeds `after` (`None` = any ack at all) or `timeout` passes.
    /// Returns the ack when it did, `None` on timeout. No spinning: the drainer that advances
    /// the ack wakes the waiters. A timeout too large to represent waits without limit.
    pub fn wait_ack(&self, after: Option<u64>, timeout: Duration) -> Option<u64> {
        let deadline = Instant::now().checked_add(timeout);
        let ack = self.ack();
        if ack > after {
            return ack;
        }
        let mut guard = self.wait_lock.lock();
        // Edge A2 (see `publish_ack`): register; fence; read the ack.
        self.waiters.fetch_add(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        let result = loop {
            let ack = self.ack();
            if ack > after {
                break ack;
            }
            let left = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left,
                    _ => break None,
                },
                None => Duration::from_secs(3600),
            };
            self.wait_cv.wait_for(&mut guard, left);
        };
        // Relaxed: only a hint for notifiers; a stale non-zero costs one spurious notify.
        self.waiters.fetch_sub(1, Ordering::Relaxed);
        result
    }

    /// The last commit's offset.
    pub fn last_seen(&self) -> Option<Offset> {
        self.seen.read()
    }

    /// The writer holding the ack back, if any (`now` in the caller's ms, for its age): the
    /// owner of the head delivery the drain parked on, and that delivery's offset. `None` when
    /// nothing pins the ack, and while the head is moving (a backlog is being drained, or the
    /// head delivery was just reported). A reader that saw an ack `a` and then calls this gets
    /// a head owing more than `a`, or `None`.
    pub fn pinning(&self, now: u64) -> Option<Pinning> {
        for _ in 0..4 {
            let d = self.head.read()?;
            let entry = self.entries.get(d.entry)?;
            let s = entry.load();
            if !s.is_stint(d.tag) || entry.covers(s, d.tag, d.offset) {
                // The head moved on, or its delivery was just reported and the drain is about
                // to move it: a holder is about to record the next one.
                crate::sync::spin_hint();
                continue;
            }
            // Relaxed: ordered after the state load (Acquire), which published them.
            let writer = WriterId::from_raw(entry.owner.load(Ordering::Relaxed));
            let progress = self.progress_of(d.entry).load(Ordering::Relaxed);
            let flushed = s.has(HAS_FLUSHED).then(|| entry.flushed_bound());
            if entry.load() != s {
                continue;
            }
            let meta = self
                .cells
                .get(writer.index())
                .map(|c| Meta(c.meta.load(Ordering::Acquire)))?;
            return Some(Pinning {
                writer,
                owes: d.offset,
                flushed,
                ms_since_progress: now.saturating_sub(progress),
                paused: meta.paused(),
                challenged: s.has(CHALLENGED),
                orphaned: meta.orphaned(),
            });
        }
        None
    }

    /// Counters and state. `now` (caller ms) dates the progress ages.
    pub fn stats(&self, now: u64) -> TrackerStats {
        let c = &self.counters;
        let last_seen = self.last_seen();
        let ack = self.ack();
        // Relaxed: a statistic.
        let moved_at = self.ack_moved_at.load(Ordering::Relaxed).checked_sub(1);
        let oldest = self.oldest_progress();
        TrackerStats {
            ack,
            last_seen,
            ack_lag: last_seen.map(|s| s.tx.saturating_sub(ack.unwrap_or(0))),
            ack_advances: c.ack_advances.get(),
            ms_since_ack_moved: moved_at.map(|t| now.saturating_sub(t)),
            registered: self.registry.lock().registered,
            pending: self.pending(),
            commits: c.commits.get(),
            flushes: self.flushes.sum(|b| &b.completions)
                + self.flushes.sum(|b| &b.other)
                + self.flushes.sum(|b| &b.late),
            late_flushes: self.flushes.sum(|b| &b.late),
            removes: c.removes.load(Ordering::Relaxed),
            challenges: c.challenges.load(Ordering::Relaxed),
            evicted_crashed: c.evicted[0].load(Ordering::Relaxed),
            evicted_orphaned: c.evicted[1].load(Ordering::Relaxed),
            evicted_stalled: c.evicted[2].load(Ordering::Relaxed),
            events_dropped: self.stale.events_dropped(),
            oldest_progress_age_ms: oldest.map(|t| now.saturating_sub(t)),
            pinning: self.pinning(now),
        }
    }

    /// Counters of the work calls did on the delivery log: the evidence for the per-call
    /// bound (no call examines more than [`WorkStats::budget`] deliveries).
    pub fn work_stats(&self) -> WorkStats {
        WorkStats {
            budget: self.call_budget() as u64,
            deliveries_popped: self.work.popped.get(),
            entries_scanned: self.work.scanned.get(),
            max_call_work: self.work.max_call.load(Ordering::Relaxed),
            backlogs: self.work.backlogs.get(),
            backlog: self.has_backlog(),
            log_len: self.log.len(),
        }
    }

    /// Approximate bytes held by the tracker's structures (cells, entries, log, sweep index,
    /// events).
    pub fn memory_bytes(&self) -> usize {
        let committer = {
            let cs = self.committer.lock();
            cs.fresh.capacity() * std::mem::size_of::<IndexEntry>()
                + cs.ready.capacity() * 4
                + cs.plan.capacity() * std::mem::size_of::<Planned>()
        };
        self.cells.allocated_bytes()
            + self.entries.allocated_bytes()
            + self.progress.allocated_bytes()
            + self.log.allocated_bytes()
            + committer
            + self.stale.memory_bytes()
    }

    // ----- internals ------------------------------------------------------------------------

    /// Writers pending now (a snapshot: exact when nothing runs concurrently).
    fn pending(&self) -> u64 {
        // Relaxed: statistics; read the ends first so a concurrent start-then-end never makes
        // the difference negative.
        let ended = self.flushes.sum(|b| &b.completions)
            + self
                .ends
                .iter()
                .map(|e| e.load(Ordering::Relaxed))
                .sum::<u64>();
        self.counters.started.get().saturating_sub(ended)
    }

    #[inline]
    fn cell(&self, writer: WriterId) -> Result<&Cell, TrackerError> {
        self.cells
            .get(writer.index())
            .ok_or(TrackerError::UnknownWriter(writer))
    }

    #[inline]
    fn entry(&self, index: u32) -> &Entry {
        self.entries
            .get(index)
            .expect("bindings and deliveries name allocated entries")
    }

    #[inline]
    fn progress_of(&self, index: u32) -> &AtomicU64 {
        self.progress
            .get(index)
            .expect("the progress table grows with the entry table")
    }

    /// Follows the writer's binding: its live stint, if any, or the eviction that just ended
    /// it (an eviction's entry carries `EVICTING` until the cell says evicted).
    #[inline(always)]
    fn bound<'a>(&'a self, cell: &Cell, writer: WriterId) -> Result<Bound<'a>, EvictedBy> {
        // Acquire: pairs with the committer's Release store of the binding, so the entry it
        // names is initialised for this stint.
        let Some(b) = Bind::decode(cell.bind.load(Ordering::Acquire)) else {
            return Ok(Bound::Idle);
        };
        let entry = self.entry(b.entry);
        let state = entry.load();
        // Relaxed: ordered after the state load (Acquire) that published it. If the entry moved
        // on to another stint since, the owner may be another writer's: the writer is idle.
        if state.tag() == b.tag && entry.owner.load(Ordering::Relaxed) == writer.to_raw() {
            if state.live() {
                return Ok(Bound::Live {
                    entry,
                    index: b.entry,
                    tag: b.tag,
                    state,
                });
            }
            if state.has(entry::EVICTING) {
                return Err(EvictedBy(
                    EvictReason::from_u8(state.evict_reason()).expect("evictions record a reason"),
                ));
            }
        }
        // Idle, unless an eviction ended the stint and already lifted its marker (the entry
        // may even serve another stint by now): the marker is lifted only after the cell says
        // evicted, and our Acquire state load is ordered after that, so the cell tells.
        let meta = Meta(cell.meta.load(Ordering::Acquire));
        if meta.holds(writer) && meta.status() == Status::Evicted {
            return Err(EvictedBy(
                meta.reason().expect("evicted cells record a reason"),
            ));
        }
        Ok(Bound::Idle)
    }

    /// Starts a new stint for `w` on a reserved entry, with its first delivery. Committer only.
    #[inline]
    fn start_stint(
        &self,
        cs: &mut Committer,
        cell: &Cell,
        w: WriterId,
        offset: Offset,
        now: u64,
    ) -> (u32, u32) {
        let index = cs.ready.pop().expect("reserved before applying");
        let entry = self.entry(index);
        // Relaxed: the entry is reserved; only we write it.
        let next = State(entry.state.load(Ordering::Relaxed)).next_stint();
        // Relaxed: published by the Release store of the state in `start`.
        self.progress_of(index).store(now, Ordering::Relaxed);
        entry.start(next, w.to_raw(), offset);
        // Release: a thread that follows the binding sees the initialised entry.
        cell.bind.store(
            Bind {
                entry: index,
                tag: next.tag(),
            }
            .encode(),
            Ordering::Release,
        );
        self.counters.started.add_holder(1);
        cs.fresh
            .push(IndexEntry::new(now, w.index(), index, next.tag()));
        (index, next.tag())
    }

    /// Reserves `n` free entries (CLOCK over the table; grows it when a scan finds none).
    #[inline]
    fn reserve_entries(&self, cs: &mut Committer, n: usize) -> Result<(), AllocFailed> {
        if cs.ready.len() >= n {
            return Ok(());
        }
        self.reserve_more(cs, n)
    }

    fn reserve_more(&self, cs: &mut Committer, n: usize) -> Result<(), AllocFailed> {
        while cs.ready.len() < n {
            let mut found = None;
            for _ in 0..CLOCK_SCAN.min(cs.capacity) {
                let i = cs.clock;
                cs.clock = if cs.clock + 1 == cs.capacity {
                    0
                } else {
                    cs.clock + 1
                };
                let e = self.entry(i);
                // Acquire: orders our later writes to the entry after the ender's CAS.
                let s = e.load();
                if !s.live() && !s.has(entry::EVICTING) && !s.has(RESERVED) {
                    found = Some((i, e, s));
                    break;
                }
            }
            match found {
                Some((i, e, s)) => {
                    // Relaxed: a word without LIVE is ours (see `entry::RESERVED`).
                    e.state.store(s.with(RESERVED, 0).0, Ordering::Relaxed);
                    cs.ready.push(i);
                }
                None => {
                    let at = cs.capacity;
                    self.entries.ensure(at)?;
                    self.progress.ensure(at)?;
                    cs.capacity = self.entries.capacity() as u32;
                    cs.clock = at;
                }
            }
        }
        Ok(())
    }

    /// Ends stint `tag` on `entry` (of `writer`) if still live, as a removal (`evict: None`) or
    /// an eviction; counts it, and drains if the drain was parked there. Returns whether this
    /// call drained (it then spent its budget: it must not also help a backlog).
    fn end_stint(
        &self,
        entry: &Entry,
        tag: u32,
        writer: WriterId,
        evict: Option<EvictReason>,
        now: Option<u64>,
    ) -> bool {
        match self.end_stint_quiet(entry, tag, writer, evict) {
            Some(s) if s.has(HEAD) => {
                self.head_released(now);
                true
            }
            _ => false,
        }
    }

    /// [`end_stint`](Self::end_stint) without the drain: returns the state it ended (whose
    /// `HEAD` bit, if set, makes the caller the drain-token holder: it must call
    /// `head_released`, after releasing any lock a drain may take).
    fn end_stint_quiet(
        &self,
        entry: &Entry,
        tag: u32,
        writer: WriterId,
        evict: Option<EvictReason>,
    ) -> Option<State> {
        let s = entry.end(tag, evict.map(|r| r.to_u8())).ok()?;
        self.count_end(writer);
        Some(s)
    }

    /// Counts a stint ended other than by a flush.
    fn count_end(&self, writer: WriterId) {
        // Relaxed: statistics.
        #[allow(clippy::modulo_one, reason = "STRIPES is 1 under loom")]
        let stripe = writer.index() as usize % STRIPES;
        self.ends[stripe].fetch_add(1, Ordering::Relaxed);
    }

    /// Ends the writer's live stint, if it has one, as a removal.
    fn end_bound_stint(
        &self,
        cell: &Cell,
        writer: WriterId,
        evict: Option<EvictReason>,
        now: Option<u64>,
    ) -> Result<bool, EvictedBy> {
        match self.bound(cell, writer)? {
            Bound::Live { entry, tag, .. } => Ok(self.end_stint(entry, tag, writer, evict, now)),
            Bound::Idle => Ok(false),
        }
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
