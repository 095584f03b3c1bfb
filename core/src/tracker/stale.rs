//! Staleness (DOMAIN.md §4): liveness signals (`down`), progress sweeps, pause/resume, events.
//!
//! # The sweep index
//!
//! A min-heap of `(progress_at, slot, epoch)`, one entry per pending stint, kept *lazily*: flush
//! progress only writes the writer's slot (the flush path never touches the index), so an
//! entry's `progress_at` may be older than the writer's real one, never newer. A sweep pops
//! entries whose key is past the grace period and looks at the writer: a dead stint is dropped,
//! a stint that progressed is re-armed with its real time, a paused one is dropped until
//! `resume`, and a truly stale one is challenged, or evicted if already challenged or orphaned.
//! Each pending writer is popped at most about once per grace period, so a sweep costs
//! O((expired + re-armed) · log n); with nothing expired it is one peek. New stints arrive
//! through an intake vector the committer appends to, so the committer never waits for a sweep.
//! Dead entries (stints that completed) are dropped when reached, and the heap is compacted
//! when it holds more than twice the pending count, so its memory follows pending writers.
//!
//! # Detection bounds (grace `G`, sweep period `P`)
//!
//! A wedged writer is past the grace period at most `P` after `progress_at + G`, challenged at
//! that sweep, evicted at the next: at most `G + 2P` after its last progress. An orphaned writer
//! is evicted at the first sweep past the grace period: at most `G + P`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use super::table::{SlotGuard, Status, flag};
use super::{DownClass, Event, EvictReason, SweepOutcome, Tracker, TrackerError, WriterId};
use crate::sync::{AtomicU64, Mutex, Ordering};

/// Compaction never runs below this many entries.
const MIN_COMPACT: usize = 4096;

/// One pending stint in the sweep index, ordered by `progress_at` first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct IndexEntry {
    progress_at: u64,
    slot: u32,
    epoch: u32,
}

impl IndexEntry {
    pub(super) fn new(progress_at: u64, slot: u32, epoch: u32) -> Self {
        IndexEntry {
            progress_at,
            slot,
            epoch,
        }
    }
}

pub(super) struct Staleness {
    grace_ms: AtomicU64,
    /// New stints, appended by the committer (and by `resume`/`down`), absorbed by sweeps.
    intake: Mutex<Vec<IndexEntry>>,
    heap: Mutex<BinaryHeap<Reverse<IndexEntry>>>,
    events: Mutex<VecDeque<Event>>,
    event_capacity: usize,
    events_dropped: AtomicU64,
}

impl Staleness {
    pub(super) fn new(grace_ms: u64, event_capacity: usize) -> Self {
        Staleness {
            grace_ms: AtomicU64::new(grace_ms),
            intake: Mutex::new(Vec::new()),
            heap: Mutex::new(BinaryHeap::new()),
            events: Mutex::new(VecDeque::new()),
            event_capacity,
            events_dropped: AtomicU64::new(0),
        }
    }

    fn push_intake(&self, e: IndexEntry) {
        self.intake.lock().push(e);
    }

    fn push_events(&self, new: &[Event]) {
        if new.is_empty() {
            return;
        }
        let mut q = self.events.lock();
        for &ev in new {
            if q.len() < self.event_capacity || matches!(ev, Event::Evicted(..)) {
                q.push_back(ev);
            } else {
                // Relaxed: a statistic.
                self.events_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub(super) fn events_dropped(&self) -> u64 {
        // Relaxed: a statistic.
        self.events_dropped.load(Ordering::Relaxed)
    }

    pub(super) fn memory_bytes(&self) -> usize {
        let e = std::mem::size_of::<IndexEntry>();
        self.intake.lock().capacity() * e
            + self.heap.lock().capacity() * e
            + self.events.lock().capacity() * std::mem::size_of::<Event>()
    }
}

/// What a sweep-index entry's writer looks like now.
enum Probe {
    /// The stint ended (or the slot changed hands): drop the entry.
    Dead,
    /// Paused: dropped from the index (the flag is cleared) until `resume` re-adds it.
    Paused,
    /// Live, with its real progress time.
    Live(u64),
}

impl Tracker {
    /// The grace period in ms.
    pub fn stall_grace_ms(&self) -> u64 {
        // Relaxed: a configuration value with no data attached.
        self.stale.grace_ms.load(Ordering::Relaxed)
    }

    pub(super) fn grace_ms(&self) -> u64 {
        self.stall_grace_ms()
    }

    /// Changes the grace period (applies from the next sweep).
    pub fn set_stall_grace_ms(&self, ms: u64) {
        // Relaxed: see `stall_grace_ms`.
        self.stale.grace_ms.store(ms, Ordering::Relaxed);
    }

    /// The host reports the writer gone (see [`DownClass`]). The grace period of an orphan
    /// counts from its last progress, not from `now` (which dates an ack the call may move).
    pub fn down(&self, writer: WriterId, class: DownClass, now: u64) -> Result<(), TrackerError> {
        let slot = self.slot(writer)?;
        let mut g = slot.lock();
        Self::check_live(&g, writer)?;
        match class {
            DownClass::Crash => {
                let unpinned = self.evict_locked(&mut g, EvictReason::Crashed);
                drop(g);
                self.stale
                    .push_events(&[Event::Evicted(writer, EvictReason::Crashed)]);
                if let Some(epoch) = unpinned {
                    self.after_unpin(writer.index(), epoch, Some(now));
                }
            }
            DownClass::Cleanup => {
                // Relaxed: statistics.
                self.counters.removes.fetch_add(1, Ordering::Relaxed);
                let unpinned = self.end_stint_if_pending(&mut g);
                drop(g);
                self.stale.push_events(&[Event::Removed(writer)]);
                if let Some(epoch) = unpinned {
                    self.after_unpin(writer.index(), epoch, Some(now));
                }
            }
            DownClass::Teardown => {
                g.set(flag::ORPHANED, true);
                // Nobody can resume a writer whose process is gone: its pause no longer holds.
                g.set(flag::PAUSED, false);
                let entry = self.reindex_locked(&mut g, writer.index());
                drop(g);
                if let Some(e) = entry {
                    self.stale.push_intake(e);
                }
            }
        }
        Ok(())
    }

    /// Answers a challenge: the writer is alive and deferring on purpose. Re-arms its grace
    /// period from `now` and clears the suspicion. No effect on a writer that is not pending.
    pub fn touch(&self, writer: WriterId, now: u64) -> Result<(), TrackerError> {
        let slot = self.slot(writer)?;
        let mut g = slot.lock();
        Self::check_live(&g, writer)?;
        if g.status == Status::Pending {
            g.progress_at = g.progress_at.max(now);
            g.set(flag::CHALLENGED, false);
        }
        Ok(())
    }

    /// The host holds the writer back on purpose (backpressure): no challenge or eviction until
    /// `resume`.
    pub fn pause(&self, writer: WriterId) -> Result<(), TrackerError> {
        let slot = self.slot(writer)?;
        let mut g = slot.lock();
        Self::check_live(&g, writer)?;
        g.set(flag::PAUSED, true);
        Ok(())
    }

    /// Ends a `pause`; the grace period re-arms from `now`.
    pub fn resume(&self, writer: WriterId, now: u64) -> Result<(), TrackerError> {
        let slot = self.slot(writer)?;
        let mut g = slot.lock();
        Self::check_live(&g, writer)?;
        g.set(flag::PAUSED, false);
        let mut entry = None;
        if g.status == Status::Pending {
            g.progress_at = g.progress_at.max(now);
            g.set(flag::CHALLENGED, false);
            entry = self.reindex_locked(&mut g, writer.index());
        }
        drop(g);
        if let Some(e) = entry {
            self.stale.push_intake(e);
        }
        Ok(())
    }

    /// Challenges and evicts stale writers (see the module docs). Evictions unpin at once and
    /// are reported as events; so are challenges.
    pub fn sweep(&self, now: u64) -> SweepOutcome {
        let grace = self.grace_ms();
        let mut out = SweepOutcome::default();
        let mut events = Vec::new();
        let mut unpinned = Vec::new();
        {
            let mut heap = self.stale.heap.lock();
            self.absorb_intake(&mut heap);
            let mut rearm = Vec::new();
            while let Some((top, mut g, progress_at)) = self.next_expired(&mut heap, now, grace) {
                if now.saturating_sub(progress_at) <= grace {
                    rearm.push(IndexEntry::new(progress_at, top.slot, top.epoch));
                    continue;
                }
                let id = WriterId::new(top.slot, g.generation);
                let reason = if g.has(flag::ORPHANED) {
                    EvictReason::Orphaned
                } else if g.has(flag::CHALLENGED) {
                    EvictReason::Stalled
                } else {
                    g.set(flag::CHALLENGED, true);
                    events.push(Event::Challenged(id));
                    out.challenged += 1;
                    // Looked at again by the next sweep, not this one.
                    rearm.push(top);
                    continue;
                };
                if let Some(epoch) = self.evict_locked(&mut g, reason) {
                    unpinned.push((top.slot, epoch));
                }
                events.push(Event::Evicted(id, reason));
                out.evicted += 1;
            }
            heap.extend(rearm.into_iter().map(Reverse));
            // Relaxed: a compaction threshold.
            let pending = self.pending() as usize;
            if heap.len() > MIN_COMPACT.max(2 * pending) {
                // Paused entries survive compaction and are dropped when popped.
                heap.retain(|Reverse(e)| self.stint_live(e));
            }
        }
        // Relaxed: statistics.
        self.counters
            .challenges
            .fetch_add(out.challenged as u64, Ordering::Relaxed);
        self.stale.push_events(&events);
        for (slot, epoch) in unpinned {
            self.after_unpin(slot, epoch, Some(now));
        }
        out
    }

    /// The pending, unpaused writers past the grace period at `now`, sorted by id. A query: it
    /// challenges and evicts nothing.
    pub fn stalled(&self, now: u64) -> Vec<WriterId> {
        let grace = self.grace_ms();
        let mut found = Vec::new();
        let mut heap = self.stale.heap.lock();
        self.absorb_intake(&mut heap);
        let mut back = Vec::new();
        while let Some((top, g, progress_at)) = self.next_expired(&mut heap, now, grace) {
            if now.saturating_sub(progress_at) > grace {
                found.push(WriterId::new(top.slot, g.generation));
            }
            back.push(IndexEntry::new(progress_at, top.slot, top.epoch));
        }
        heap.extend(back.into_iter().map(Reverse));
        found.sort();
        found
    }

    /// Moves up to `max` queued events into `out` (oldest first); returns how many.
    pub fn take_events(&self, out: &mut Vec<Event>, max: usize) -> usize {
        let mut q = self.stale.events.lock();
        let n = max.min(q.len());
        out.extend(q.drain(..n));
        n
    }

    /// Pops index entries whose key is past the grace period until one names a live, unpaused
    /// stint; returns it locked, with the writer's real progress time (which may be recent:
    /// the key is lazy). Dead and paused entries are dropped on the way.
    fn next_expired(
        &self,
        heap: &mut BinaryHeap<Reverse<IndexEntry>>,
        now: u64,
        grace: u64,
    ) -> Option<(IndexEntry, SlotGuard<'_>, u64)> {
        while let Some(&Reverse(top)) = heap.peek() {
            if now.saturating_sub(top.progress_at) <= grace {
                return None;
            }
            heap.pop();
            let mut g = self
                .table
                .get(top.slot)
                .expect("indexed slots exist")
                .lock();
            if let Probe::Live(progress_at) = Self::probe(&mut g, &top) {
                return Some((top, g, progress_at));
            }
        }
        None
    }

    /// The oldest `progress_at` among pending, unpaused writers (exact: stale keys are
    /// re-armed first).
    pub(super) fn oldest_progress(&self) -> Option<u64> {
        let mut heap = self.stale.heap.lock();
        self.absorb_intake(&mut heap);
        while let Some(&Reverse(top)) = heap.peek() {
            let slot = self.table.get(top.slot).expect("indexed slots exist");
            let probe = Self::probe(&mut slot.lock(), &top);
            match probe {
                Probe::Live(t) if t == top.progress_at => return Some(t),
                Probe::Live(t) => {
                    heap.pop();
                    heap.push(Reverse(IndexEntry::new(t, top.slot, top.epoch)));
                }
                Probe::Dead | Probe::Paused => {
                    heap.pop();
                }
            }
        }
        None
    }

    /// Moves new stints into the intake; compacts it (lock-free liveness check) when nobody
    /// has swept for a long time, so its memory follows pending writers.
    pub(super) fn admit_fresh(&self, fresh: &mut Vec<IndexEntry>, pending: u64) {
        let mut intake = self.stale.intake.lock();
        intake.append(fresh);
        if intake.len() > MIN_COMPACT.max(2 * pending as usize) {
            intake.retain(|e| self.stint_live(e));
        }
    }

    /// False when the entry's stint certainly ended (read without the slot lock).
    fn stint_live(&self, e: &IndexEntry) -> bool {
        self.table
            .get(e.slot)
            .is_some_and(|slot| !slot.stint_ended(e.epoch))
    }

    fn absorb_intake(&self, heap: &mut BinaryHeap<Reverse<IndexEntry>>) {
        let mut intake = self.stale.intake.lock();
        heap.extend(intake.drain(..).map(Reverse));
    }

    /// Classifies an index entry; a paused writer loses its index entry (flag cleared).
    fn probe(g: &mut SlotGuard<'_>, e: &IndexEntry) -> Probe {
        if g.epoch() != e.epoch || g.status != Status::Pending {
            Probe::Dead
        } else if g.has(flag::PAUSED) {
            g.set(flag::INDEXED, false);
            Probe::Paused
        } else {
            Probe::Live(g.progress_at)
        }
    }

    /// If the writer is pending but not indexed, marks it indexed and returns the entry to add.
    fn reindex_locked(&self, g: &mut SlotGuard<'_>, slot: u32) -> Option<IndexEntry> {
        if g.status == Status::Pending && !g.has(flag::INDEXED) {
            g.set(flag::INDEXED, true);
            Some(IndexEntry::new(g.progress_at, slot, g.epoch()))
        } else {
            None
        }
    }

    /// Evicts under the writer's lock; returns the ended epoch if it was pending.
    fn evict_locked(&self, g: &mut SlotGuard<'_>, reason: EvictReason) -> Option<u32> {
        let unpinned = self.end_stint_if_pending(g);
        g.status = Status::Evicted;
        g.reason = reason.to_u8();
        g.flags &= flag::HAS_FLUSHED;
        let i = reason.to_u8() as usize - 1;
        // Relaxed: statistics.
        self.counters.evicted[i].fetch_add(1, Ordering::Relaxed);
        unpinned
    }
}
