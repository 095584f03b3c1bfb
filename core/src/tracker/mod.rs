//! The flush tracker (DOMAIN.md §3) and its staleness sweeps (§4).
//!
//! # Structures
//!
//! - **Writer table** ([`table`]): one 64-byte slot per registered writer, each behind its own
//!   one-byte lock. A flush report touches only its writer's slot.
//! - **Delivery log**: a FIFO of `(slot, epoch, offset)` deliveries in commit order, appended by
//!   the committer. A delivery is *done* when its writer's stint ended (completed, removed,
//!   evicted) or its writer reported `flushed >= offset`. The ack is exact:
//!   `head.offset.tx − 1` for the first delivery not done, or `last_seen.tx` when none is left.
//!   Done deliveries are dropped lazily at the head (RocksDB's prepared-heap trick: offsets are
//!   dispensed in order, so a FIFO with lazy deletion yields the exact minimum), and the log is
//!   compacted when it doubles while the head is pinned, so memory follows *unflushed*
//!   deliveries, not commits.
//! - **Head pin**: one atomic word naming the delivery at the head `(slot, epoch)`. Only that
//!   writer can move the ack, so only its flush (or removal, or eviction) elects a drainer; every
//!   other flush is one slot lock and one atomic load.
//! - **Ack**: one atomic word (`ack + 1`, 0 = none), written only by the log-lock holder, so it is
//!   monotonic by construction; readers do a single load.
//! - **Sweep index** ([`stale`]): a lazy min-heap of `(progress_at, slot, epoch)`; see there.
//!
//! The memory-ordering argument is in `docs/MEMORY_ORDERING.md` and at each atomic below.

mod stale;
mod table;
mod types;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::Offset;
use crate::sync::{AtomicU8, AtomicU64, AtomicUsize, CachePadded, Condvar, Mutex, Ordering, fence};

use stale::{IndexEntry, Staleness};
use table::{Slot, SlotGuard, Status, Table, WriterState, flag};
pub use types::{
    DownClass, Event, EvictReason, Pinning, SweepOutcome, TrackerError, TrackerOptions,
    TrackerStats, WriterId, WriterStatus,
};

/// `head_pin` value when the delivery log is empty. Slot `u32::MAX` is never allocated.
const NO_PIN: u64 = u64::MAX;

#[inline]
fn pin_of(slot: u32, epoch: u32) -> u64 {
    ((slot as u64) << 32) | epoch as u64
}

/// Drain election states (see [`Tracker::request_drain`]).
const DRAIN_IDLE: u8 = 0;
const DRAIN_RUNNING: u8 = 1;
const DRAIN_AGAIN: u8 = 2;

/// The log is never compacted below this many entries (compaction is O(len)).
const MIN_COMPACT: usize = 4096;

/// Commits with at most this many writers lock each writer once (validate and apply under one
/// lock); larger ones validate and apply in two passes.
const HELD_GUARDS: usize = 8;

/// Flush counters are striped by writer index so concurrent flushers do not share a line.
const STRIPES: usize = 8;

/// One delivery of a commit to a writer: 24 bytes.
#[derive(Clone, Copy, Debug)]
struct Delivery {
    slot: u32,
    epoch: u32,
    offset: Offset,
}

/// State behind the log lock: held by the committer while it commits and by whoever drains.
struct Log {
    entries: VecDeque<Delivery>,
    last_seen: Option<Offset>,
    compact_at: usize,
    /// Caller ms when the ack last moved (the `now` of the call that moved it, or of the
    /// latest commit for calls without one).
    ack_moved_at: Option<u64>,
    /// The latest commit's `now`.
    last_now: u64,
}

/// State behind the commit lock: only committers take it, so with one committing thread it is
/// never contended. Slot work happens here, outside the log lock, so a drainer never waits for
/// a commit's slot locks.
struct Committer {
    /// The previous commit's tx, or `initial_ack`: the next commit must exceed it.
    last_tx: Option<u64>,
    /// Reused buffers: the current commit's deliveries and new stints.
    deliveries: Vec<Delivery>,
    fresh: Vec<IndexEntry>,
}

struct Registry {
    free: Vec<u32>,
    next: u64,
    registered: u64,
}

#[derive(Default)]
struct Counters {
    commits: AtomicU64,
    removes: AtomicU64,
    ack_advances: AtomicU64,
    challenges: AtomicU64,
    evicted: [AtomicU64; 3],
    flushes: [CachePadded<AtomicU64>; STRIPES],
    late_flushes: [CachePadded<AtomicU64>; STRIPES],
}

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
    table: Table,
    registry: Mutex<Registry>,
    committer: Mutex<Committer>,
    log: Mutex<Log>,
    /// Drain election: IDLE → RUNNING (one drainer) → AGAIN (something changed meanwhile).
    drain: CachePadded<AtomicU8>,
    /// `pin_of(slot, epoch)` of the delivery at the head of the log, or `NO_PIN`.
    head_pin: CachePadded<AtomicU64>,
    /// The ack plus one; 0 means none yet.
    ack: CachePadded<AtomicU64>,
    /// Stints started (committer only) and ended (anyone): `pending = started − ended`, two
    /// counters so the committer and the flushers never write the same line.
    started: CachePadded<AtomicU64>,
    ended: CachePadded<AtomicU64>,
    waiters: AtomicUsize,
    wait_lock: Mutex<()>,
    wait_cv: Condvar,
    stale: Staleness,
    counters: Counters,
    max_writers: usize,
}

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

impl Tracker {
    /// Builds a tracker. Fails with `InvalidArgument` when `max_writers` is 0 or above
    /// `u32::MAX`, `expected_writers > max_writers`, or `initial_ack` is `u64::MAX`.
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
        let table = Table::new();
        if options.expected_writers > 0 {
            table.ensure((options.expected_writers - 1) as u32);
        }
        Ok(Tracker {
            table,
            registry: Mutex::new(Registry {
                free: Vec::new(),
                next: 0,
                registered: 0,
            }),
            committer: Mutex::new(Committer {
                last_tx: options.initial_ack,
                deliveries: Vec::new(),
                fresh: Vec::new(),
            }),
            log: Mutex::new(Log {
                entries: VecDeque::new(),
                last_seen: None,
                compact_at: MIN_COMPACT,
                ack_moved_at: None,
                last_now: 0,
            }),
            drain: CachePadded::new(AtomicU8::new(DRAIN_IDLE)),
            head_pin: CachePadded::new(AtomicU64::new(NO_PIN)),
            ack: CachePadded::new(AtomicU64::new(options.initial_ack.map_or(0, |a| a + 1))),
            started: CachePadded::new(AtomicU64::new(0)),
            ended: CachePadded::new(AtomicU64::new(0)),
            waiters: AtomicUsize::new(0),
            wait_lock: Mutex::new(()),
            wait_cv: Condvar::new(),
            stale: Staleness::new(options.stall_grace_ms, options.event_capacity),
            counters: Counters::default(),
            max_writers: options.max_writers,
        })
    }

    // ----- writers -------------------------------------------------------------------------

    /// Registers a new writer. Fails with `CapacityExceeded` past `max_writers`.
    pub fn register(&self) -> Result<WriterId, TrackerError> {
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
                let i = reg.next as u32;
                self.table.ensure(i);
                reg.next += 1;
                i
            }
        };
        reg.registered += 1;
        let slot = self.table.get(index).expect("ensured above");
        let mut g = slot.lock();
        debug_assert_eq!(g.status, Status::Free);
        g.status = Status::Idle;
        g.flags = 0;
        g.reason = 0;
        g.progress_at = 0;
        Ok(WriterId::new(index, g.generation))
    }

    /// Releases a writer's id (any status, evicted included). If it was pending it unpins now,
    /// like `remove`. The id is stale afterwards: using it fails with `UnknownWriter`.
    pub fn unregister(&self, writer: WriterId) -> Result<(), TrackerError> {
        let slot = self.slot(writer)?;
        let mut g = slot.lock();
        if g.generation != writer.generation() || g.status == Status::Free {
            return Err(TrackerError::UnknownWriter(writer));
        }
        let unpinned = self.end_stint_if_pending(&mut g);
        g.status = Status::Free;
        g.flags = 0;
        g.generation = g.generation.wrapping_add(1);
        let reusable = g.generation != 0;
        drop(g);
        if let Some(epoch) = unpinned {
            self.after_unpin(writer.index(), epoch, None);
        }
        let mut reg = self.registry.lock();
        reg.registered -= 1;
        if reusable {
            reg.free.push(writer.index());
        }
        Ok(())
    }

    /// What the writer is doing.
    pub fn writer_status(&self, writer: WriterId) -> Result<WriterStatus, TrackerError> {
        let g = self.slot(writer)?.lock();
        if g.generation != writer.generation() {
            return Err(TrackerError::UnknownWriter(writer));
        }
        Ok(match g.status {
            Status::Free => return Err(TrackerError::UnknownWriter(writer)),
            Status::Idle => WriterStatus::Idle,
            Status::Pending => WriterStatus::Pending,
            Status::Evicted => WriterStatus::Evicted(
                EvictReason::from_u8(g.reason).expect("evicted slots record a reason"),
            ),
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
        // Touch every slot first: independent loads overlap their cache misses, where the lock
        // instructions below would take them one after another.
        for &w in writers {
            if let Some(slot) = self.table.get(w.index()) {
                slot.prefetch();
            }
        }
        cs.deliveries.clear();
        if writers.len() <= HELD_GUARDS {
            // One lock per writer: validate every writer while holding its lock, then apply
            // with the same guards. Only a committer holds several slot locks at once (and no
            // other lock meanwhile but the commit lock), so this cannot deadlock; a slot listed
            // twice is locked once.
            let mut guards: [Option<SlotGuard<'_>>; HELD_GUARDS] = [const { None }; HELD_GUARDS];
            for (i, &w) in writers.iter().enumerate() {
                match writers[..i].iter().position(|p| p.index() == w.index()) {
                    Some(first) => {
                        let g = guards[first].as_ref().expect("first occurrence is locked");
                        Self::check_live(g, w)?;
                    }
                    None => {
                        let g = self.slot(w)?.lock();
                        Self::check_live(&g, w)?;
                        guards[i] = Some(g);
                    }
                }
            }
            for (g, w) in guards.iter_mut().zip(writers) {
                if let Some(g) = g {
                    Self::deliver(g, w.index(), offset, now, cs);
                }
            }
        } else {
            for &w in writers {
                let slot = self.slot(w)?;
                Self::check_live(&slot.lock(), w)?;
            }
            for &w in writers {
                let mut g = self.slot(w).expect("validated above").lock();
                if Self::check_live(&g, w).is_err() {
                    // Evicted or unregistered by another thread since validation: the commit
                    // is linearised before that, and the eviction/removal ended the stint.
                    continue;
                }
                Self::deliver(&mut g, w.index(), offset, now, cs);
            }
        }
        cs.last_tx = Some(offset.tx);
        // Relaxed: statistics; only committers write these (under the commit lock).
        self.counters.commits.fetch_add(1, Ordering::Relaxed);
        if !cs.fresh.is_empty() {
            self.started
                .fetch_add(cs.fresh.len() as u64, Ordering::Relaxed);
        }
        {
            // Deliveries and `last_seen` are published in one log critical section: a drainer
            // that finds the log empty knows every delivered commit up to `last_seen` is done.
            // (A writer may already have flushed a delivery before it lands here; it is then
            // simply dead on arrival.)
            let mut log = self.log.lock();
            let log = &mut *log;
            let was_empty = log.entries.is_empty();
            log.entries.extend(cs.deliveries.drain(..));
            log.last_seen = Some(offset);
            log.last_now = log.last_now.max(now);
            let mut must_drain = was_empty;
            if log.entries.len() >= log.compact_at {
                self.compact_log(log);
                must_drain = true;
            }
            if must_drain {
                self.drain_locked(log, Some(now));
            }
        }
        if !cs.fresh.is_empty() {
            // Lock order: commit, then intake; the log lock is not held here.
            self.admit_fresh(&mut cs.fresh, self.pending());
        }
        Ok(())
    }

    /// Records one delivery under the writer's lock.
    #[inline]
    fn deliver(g: &mut SlotGuard<'_>, index: u32, offset: Offset, now: u64, cs: &mut Committer) {
        if g.status == Status::Pending {
            g.last_sent = offset;
        } else {
            g.status = Status::Pending;
            g.last_sent = offset;
            g.progress_at = now;
            // A new stint owes this commit whatever was reported before it (a report beyond an
            // earlier `last_sent` must not cover a later delivery).
            g.set(flag::CHALLENGED | flag::HAS_FLUSHED, false);
            g.set(flag::INDEXED, true);
            cs.fresh.push(IndexEntry::new(now, index, g.epoch()));
        }
        cs.deliveries.push(Delivery {
            slot: index,
            epoch: g.epoch(),
            offset,
        });
    }

    /// Reports that `writer` flushed everything up to `offset` (at caller time `now`, ms).
    ///
    /// Ignored (but counted) when the writer is not pending. `offset >= last_sent` completes the
    /// writer; a higher partial report is progress; a lower one changes nothing. Takes only the
    /// writer's own lock; if this writer pins the ack it also elects a drainer.
    pub fn flushed(&self, writer: WriterId, offset: Offset, now: u64) -> Result<(), TrackerError> {
        let slot = self.slot(writer)?;
        let mut g = slot.lock();
        Self::check_live(&g, writer)?;
        let stripe = writer.index() as usize % STRIPES;
        // Relaxed: statistics.
        self.counters.flushes[stripe].fetch_add(1, Ordering::Relaxed);
        if g.status != Status::Pending {
            self.counters.late_flushes[stripe].fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let epoch = g.epoch();
        if offset >= g.last_sent {
            if !g.has(flag::HAS_FLUSHED) || offset > g.flushed {
                g.flushed = offset;
            }
            g.set(flag::HAS_FLUSHED, true);
            g.end_stint();
            // Relaxed: statistics and a compaction threshold.
            self.ended.fetch_add(1, Ordering::Relaxed);
        } else if !g.has(flag::HAS_FLUSHED) || offset > g.flushed {
            g.flushed = offset;
            g.set(flag::HAS_FLUSHED, true);
            g.progress_at = g.progress_at.max(now);
            g.set(flag::CHALLENGED, false);
        } else {
            return Ok(());
        }
        drop(g);
        self.after_unpin(writer.index(), epoch, Some(now));
        Ok(())
    }

    /// The writer is gone: it unpins now (everything it owed counts as done). It stays
    /// registered and may receive later commits.
    pub fn remove(&self, writer: WriterId) -> Result<(), TrackerError> {
        let slot = self.slot(writer)?;
        let mut g = slot.lock();
        Self::check_live(&g, writer)?;
        // Relaxed: statistics.
        self.counters.removes.fetch_add(1, Ordering::Relaxed);
        let unpinned = self.end_stint_if_pending(&mut g);
        drop(g);
        if let Some(epoch) = unpinned {
            self.after_unpin(writer.index(), epoch, None);
        }
        Ok(())
    }

    /// The position the host may acknowledge upstream: every commit with `tx <= ack` was
    /// flushed by every writer it was delivered to. `None` until the first ack (or the
    /// `initial_ack`). One atomic load.
    #[inline]
    pub fn ack(&self) -> Option<u64> {
        // Acquire: pairs with the Release in `publish_ack`, so a reader that sees an ack also
        // sees the counters and state the drainer wrote before it (not needed for the value).
        self.ack.load(Ordering::Acquire).checked_sub(1)
    }

    /// How many times the ack moved; compare two readings to learn that it advanced.
    pub fn ack_generation(&self) -> u64 {
        // Relaxed: a statistic.
        self.counters.ack_advances.load(Ordering::Relaxed)
    }

    /// Blocks until the ack exceeds `after` (`None` = any ack at all) or `timeout` passes.
    /// Returns the ack when it did, `None` on timeout. No spinning: the drainer that advances
    /// the ack wakes the waiters.
    pub fn wait_ack(&self, after: Option<u64>, timeout: Duration) -> Option<u64> {
        let deadline = Instant::now() + timeout;
        let ack = self.ack();
        if ack > after {
            return ack;
        }
        let mut guard = self.wait_lock.lock();
        // SeqCst + fence: store-buffering handshake with `publish_ack` (store ack; fence; load
        // waiters). Either the drainer sees our registration and notifies under `wait_lock`
        // (which we hold until we wait), or we see its ack below.
        self.waiters.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let result = loop {
            let ack = self.ack();
            if ack > after {
                break ack;
            }
            let now = Instant::now();
            if now >= deadline {
                break None;
            }
            self.wait_cv.wait_for(&mut guard, deadline - now);
        };
        // Relaxed: only a hint for notifiers; a stale non-zero costs one spurious notify.
        self.waiters.fetch_sub(1, Ordering::Relaxed);
        result
    }

    /// The last commit's offset.
    pub fn last_seen(&self) -> Option<Offset> {
        self.log.lock().last_seen
    }

    /// The writer holding the ack back, if any (`now` in the caller's ms, for its age).
    pub fn pinning(&self, now: u64) -> Option<Pinning> {
        for _ in 0..4 {
            // Acquire: pairs with the Release store in `drain_locked`.
            let pin = self.head_pin.load(Ordering::Acquire);
            if pin == NO_PIN {
                return None;
            }
            let (index, epoch) = ((pin >> 32) as u32, pin as u32);
            let slot = self.table.get(index)?;
            let g = slot.lock();
            if g.epoch() != epoch || g.status != Status::Pending {
                continue; // the head moved while we looked
            }
            let owes = self.head_offset().unwrap_or(g.last_sent);
            return Some(Pinning {
                writer: WriterId::new(index, g.generation),
                owes,
                flushed: g.has(flag::HAS_FLUSHED).then_some(g.flushed),
                ms_since_progress: now.saturating_sub(g.progress_at),
                paused: g.has(flag::PAUSED),
                challenged: g.has(flag::CHALLENGED),
                orphaned: g.has(flag::ORPHANED),
            });
        }
        None
    }

    fn head_offset(&self) -> Option<Offset> {
        self.log.try_lock()?.entries.front().map(|d| d.offset)
    }

    /// Counters and state. `now` (caller ms) dates the progress ages.
    pub fn stats(&self, now: u64) -> TrackerStats {
        let c = &self.counters;
        let sum = |a: &[CachePadded<AtomicU64>; STRIPES]| {
            // Relaxed: statistics.
            a.iter().map(|x| x.load(Ordering::Relaxed)).sum()
        };
        let (last_seen, moved_at) = {
            let log = self.log.lock();
            (log.last_seen, log.ack_moved_at)
        };
        let ack = self.ack();
        let oldest = self.oldest_progress();
        TrackerStats {
            ack,
            last_seen,
            ack_lag: last_seen.map(|s| s.tx.saturating_sub(ack.unwrap_or(0))),
            ack_advances: c.ack_advances.load(Ordering::Relaxed),
            ms_since_ack_moved: moved_at.map(|t| now.saturating_sub(t)),
            registered: self.registry.lock().registered,
            pending: self.pending(),
            commits: c.commits.load(Ordering::Relaxed),
            flushes: sum(&c.flushes),
            late_flushes: sum(&c.late_flushes),
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

    /// Approximate bytes held by the tracker's structures (slots, log, sweep index, events).
    pub fn memory_bytes(&self) -> usize {
        let committer = {
            let cs = self.committer.lock();
            cs.deliveries.capacity() * std::mem::size_of::<Delivery>()
                + cs.fresh.capacity() * std::mem::size_of::<IndexEntry>()
        };
        let log = self.log.lock().entries.capacity() * std::mem::size_of::<Delivery>();
        self.table.allocated_bytes() + committer + log + self.stale.memory_bytes()
    }

    // ----- internals ------------------------------------------------------------------------

    /// Writers pending now (a snapshot: exact when nothing runs concurrently).
    fn pending(&self) -> u64 {
        // Relaxed: statistics and compaction thresholds; read `ended` first so a concurrent
        // start-then-end never makes the difference negative.
        let ended = self.ended.load(Ordering::Relaxed);
        self.started.load(Ordering::Relaxed).saturating_sub(ended)
    }

    #[inline]
    fn slot(&self, writer: WriterId) -> Result<&Slot, TrackerError> {
        self.table
            .get(writer.index())
            .ok_or(TrackerError::UnknownWriter(writer))
    }

    /// Rejects stale, unknown and evicted ids.
    #[inline]
    fn check_live(g: &WriterState, writer: WriterId) -> Result<(), TrackerError> {
        if g.generation != writer.generation() || g.status == Status::Free {
            Err(TrackerError::UnknownWriter(writer))
        } else if g.status == Status::Evicted {
            Err(TrackerError::EvictedWriter(writer))
        } else {
            Ok(())
        }
    }

    /// Ends the stint if pending; returns the ended epoch (to check against the head pin).
    fn end_stint_if_pending(&self, g: &mut SlotGuard<'_>) -> Option<u32> {
        if g.status != Status::Pending {
            return None;
        }
        let epoch = g.epoch();
        g.end_stint();
        // Relaxed: statistics and a compaction threshold.
        self.ended.fetch_add(1, Ordering::Relaxed);
        Some(epoch)
    }

    /// Called after a writer's state changed in a way that may complete the head delivery
    /// (its lock released). Only the head's own writer can move the ack, so everyone else
    /// returns after one load.
    #[inline]
    fn after_unpin(&self, slot: u32, epoch: u32, now: Option<u64>) {
        // Relaxed is enough: the drainer stores `head_pin` *before* locking this writer's slot
        // to check it, and we load it *after* unlocking that slot. If the drainer's check came
        // after our unlock, it saw our change; otherwise its store happens-before our load
        // (slot unlock → lock), so we see the pin (or a later one) and elect a drainer.
        if self.head_pin.load(Ordering::Relaxed) == pin_of(slot, epoch) {
            self.request_drain(now);
        }
    }

    /// Elects one drainer among concurrent requesters; the others return at once, so flush
    /// reports never queue on the log lock (at most one thread, the elected one, waits for it).
    #[cold]
    fn request_drain(&self, now: Option<u64>) {
        let mut cur = self.drain.load(Ordering::Relaxed);
        loop {
            let next = if cur == DRAIN_IDLE {
                DRAIN_RUNNING
            } else {
                DRAIN_AGAIN
            };
            // AcqRel: Release publishes our writer-state change to the drainer whose CAS/swap
            // reads this value; Acquire (when we win) orders us after the previous drainer.
            match self
                .drain
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(actual) => cur = actual,
            }
        }
        if cur != DRAIN_IDLE {
            return; // the running drainer goes round again and sees our change
        }
        loop {
            {
                let mut log = self.log.lock();
                self.drain_locked(&mut log, now);
            }
            // AcqRel/Acquire: if someone asked again meanwhile we read their Release and drain
            // once more with their change visible. The swap (an RMW) reads the newest request.
            match self.drain.compare_exchange(
                DRAIN_RUNNING,
                DRAIN_IDLE,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                Err(_) => {
                    self.drain.swap(DRAIN_RUNNING, Ordering::AcqRel);
                }
            }
        }
    }

    /// Drops done deliveries at the head and publishes the ack. Caller holds the log lock.
    fn drain_locked(&self, log: &mut Log, now: Option<u64>) {
        let target = loop {
            let Some(d) = log.entries.front().copied() else {
                // Release: pairs with `pinning`'s Acquire.
                self.head_pin.store(NO_PIN, Ordering::Release);
                break log.last_seen.map(|o| o.tx);
            };
            let pin = pin_of(d.slot, d.epoch);
            // Relaxed load: we are the only writer of head_pin (log lock held).
            if self.head_pin.load(Ordering::Relaxed) != pin {
                // Must precede the slot lock below: see `after_unpin`.
                self.head_pin.store(pin, Ordering::Release);
            }
            let slot = self
                .table
                .get(d.slot)
                .expect("a delivery names an allocated slot");
            // A changed epoch proves the stint ended without the lock; "not done" is only ever
            // concluded under the lock (which the head-pin handshake relies on).
            if slot.stint_ended(d.epoch) || slot.lock().covers(d.epoch, d.offset) {
                log.entries.pop_front();
                continue;
            }
            break d.offset.tx.checked_sub(1);
        };
        if let Some(ack) = target {
            self.publish_ack(ack, log, now);
        }
    }

    /// Raises the ack to `ack` if higher. Caller holds the log lock (the only writer).
    fn publish_ack(&self, ack: u64, log: &mut Log, now: Option<u64>) {
        let encoded = ack + 1;
        // Relaxed load: we are the only writer (log lock held).
        if encoded <= self.ack.load(Ordering::Relaxed) {
            return;
        }
        // Release: pairs with `ack()`'s Acquire.
        self.ack.store(encoded, Ordering::Release);
        // Relaxed: a statistic.
        self.counters.ack_advances.fetch_add(1, Ordering::Relaxed);
        log.ack_moved_at = Some(now.unwrap_or(log.last_now));
        // SeqCst fence: store-buffering handshake with `wait_ack` (see there).
        fence(Ordering::SeqCst);
        if self.waiters.load(Ordering::Relaxed) > 0 {
            let _g = self.wait_lock.lock();
            self.wait_cv.notify_all();
        }
    }

    /// Drops done deliveries anywhere in the log (keeping order). O(len), run when the log
    /// doubled since the last compaction, so amortised O(1) per delivery.
    #[cold]
    fn compact_log(&self, log: &mut Log) {
        log.entries.retain(|d| {
            let slot = self.table.get(d.slot).expect("allocated");
            !(slot.stint_ended(d.epoch) || slot.lock().covers(d.epoch, d.offset))
        });
        log.entries.shrink_to(log.entries.len() * 2);
        log.compact_at = (log.entries.len() * 2).max(MIN_COMPACT);
    }
}

#[cfg(test)]
mod tests;
