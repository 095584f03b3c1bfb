//! Staleness: liveness signals (`down`), progress sweeps, pause/resume, events.
//!
//! # The sweep index
//!
//! A min-heap of `(progress_at, entry, tag)`, one entry per pending stint, kept *lazily*: flush
//! progress only writes the stint's own entry (the flush path never touches the index), so a
//! key may be older than the stint's real progress, never newer. A sweep pops keys past the
//! grace period and looks at the stint: a dead stint is dropped, one that progressed is re-armed
//! with its real time, a paused one is dropped until `resume`, and a truly stale one is
//! challenged, or evicted if already challenged or orphaned. Each pending writer is popped at
//! most about once per grace period, so a sweep costs O((expired + re-armed) · log n); with
//! nothing expired it is one peek. New stints wait in the committer's buffer until the next
//! sweep collects them (a stint cannot expire before its grace period, so none is missed), so
//! the committer never waits for a sweep; `resume` and `down` re-index through a small intake.
//! The heap is compacted when it holds more than twice the pending count, and the committer's
//! buffer is tidied in budgeted steps when nobody sweeps, so memory follows pending writers.
//!
//! # Linearisation
//!
//! Evicting a pending writer is one CAS on its entry's state from the very value the sweep
//! judged: a flush, `touch`, `pause` or `resume` in between changes that word (the last three
//! bump its version under `MUT`), the CAS fails and the sweep judges again. The eviction marks
//! the entry `EVICTING` until the cell says evicted, so nobody sees the writer idle meanwhile.
//!
//! # Detection bounds (grace `G`, sweep period `P`)
//!
//! A wedged writer is past the grace period at most `P` after `progress_at + G`, challenged at
//! that sweep, evicted at the next: at most `G + 2P` after its last progress. An orphaned writer
//! is evicted at the first sweep past the grace period: at most `G + P`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use super::cell::{Cell, Meta, Status};
use super::entry::{CHALLENGED, EVICTING, Entry, INDEXED, MUT, State};
use super::{
    Bound, Committer, DownClass, Event, EvictReason, EvictedBy, SweepOutcome, Tracker,
    TrackerError, WriterId,
};
use crate::sync::{AtomicU64, Mutex, Ordering};

/// Compaction never runs below this many entries.
const MIN_COMPACT: usize = if crate::sync::LOOM { 2 } else { 4096 };
/// Index entries one `oldest_progress` query may look at.
const OLDEST_BUDGET: usize = 1024;
/// New-stint entries one commit may tidy.
const TIDY_BUDGET: usize = 1024;
/// The committer's buffer of new stints is tidied (see `tidy_fresh`) once it is this long.
pub(super) const TIDY_AT: usize = MIN_COMPACT;

/// One pending stint in the sweep index, ordered by `progress_at`, then by writer index (so
/// one sweep reports its events in writer order among equal keys, a stable order for hosts and
/// `tidemark replay`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct IndexEntry {
    progress_at: u64,
    writer: u32,
    entry: u32,
    tag: u32,
}

impl IndexEntry {
    pub(super) fn new(progress_at: u64, writer: u32, entry: u32, tag: u32) -> Self {
        IndexEntry {
            progress_at,
            writer,
            entry,
            tag,
        }
    }

    fn at(self, progress_at: u64) -> Self {
        IndexEntry {
            progress_at,
            ..self
        }
    }
}

pub(super) struct Staleness {
    grace_ms: AtomicU64,
    /// Re-indexed stints (`resume`, `down(teardown)`), absorbed by sweeps.
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

/// What a sweep-index entry's stint looks like now.
enum Probe<'a> {
    /// The stint ended (or the entry moved on): drop the index entry.
    Dead,
    /// Paused: dropped from the index (`INDEXED` cleared) until `resume` re-adds it.
    Paused,
    /// Live, with its real progress time.
    Live(Live<'a>),
}

struct Live<'a> {
    entry: &'a Entry,
    state: State,
    writer: WriterId,
    meta: Meta,
    progress_at: u64,
}

impl Tracker {
    /// The grace period in ms.
    pub fn stall_grace_ms(&self) -> u64 {
        // Relaxed: a configuration value with no data attached.
        self.stale.grace_ms.load(Ordering::Relaxed)
    }

    /// Changes the grace period (applies from the next sweep).
    pub fn set_stall_grace_ms(&self, ms: u64) {
        // Relaxed: see `stall_grace_ms`.
        self.stale.grace_ms.store(ms, Ordering::Relaxed);
    }

    /// The host reports the writer gone (see [`DownClass`]). The grace period of an orphan
    /// counts from its last progress, not from `now` (which dates an ack the call may move).
    pub fn down(&self, writer: WriterId, class: DownClass, now: u64) -> Result<(), TrackerError> {
        let cell = self.cell(writer)?;
        Meta(cell.meta.load(Ordering::Acquire)).check(writer)?;
        // Whether this call drained for a head it released (then it helps no backlog: one
        // budget per call).
        let mut drained = false;
        match class {
            DownClass::Crash => drained = self.evict(cell, writer, EvictReason::Crashed, now)?,
            DownClass::Cleanup => {
                // Relaxed: statistics.
                self.counters.removes.fetch_add(1, Ordering::Relaxed);
                match self.end_bound_stint(cell, writer, None, Some(now)) {
                    Err(_) => return Err(TrackerError::EvictedWriter(writer)),
                    Ok(d) => drained = d,
                }
                self.stale.push_events(&[Event::Removed(writer)]);
            }
            DownClass::Teardown => {
                // Nobody can resume a writer whose process is gone: its pause no longer holds.
                let entry =
                    self.change_writer(cell, writer, |m| m.with_orphaned(true).with_paused(false))?;
                if let Some(e) = entry {
                    self.stale.push_intake(e);
                }
            }
        }
        if !drained {
            self.help_backlog(Some(now));
        }
        Ok(())
    }

    /// Answers a challenge: the writer is alive and deferring on purpose. Re-arms its grace
    /// period from `now` and clears the suspicion. No effect on a writer that is not pending.
    pub fn touch(&self, writer: WriterId, now: u64) -> Result<(), TrackerError> {
        let cell = self.cell(writer)?;
        Meta(cell.meta.load(Ordering::Acquire)).check(writer)?;
        loop {
            match self.bound(cell, writer) {
                Err(EvictedBy(_)) => return Err(TrackerError::EvictedWriter(writer)),
                Ok(Bound::Idle) => break,
                Ok(Bound::Live {
                    entry, index, tag, ..
                }) => {
                    if let Ok(held) = entry.acquire(tag) {
                        self.raise_progress(index, now);
                        entry.release(held, 0, CHALLENGED);
                        break;
                    }
                    // The stint ended under us (completed or evicted): look again.
                }
            }
        }
        self.help_backlog(Some(now));
        Ok(())
    }

    /// The host holds the writer back on purpose (backpressure): no challenge or eviction until
    /// `resume`.
    pub fn pause(&self, writer: WriterId) -> Result<(), TrackerError> {
        let cell = self.cell(writer)?;
        self.change_writer(cell, writer, |m| m.with_paused(true))?;
        self.help_backlog(None);
        Ok(())
    }

    /// Ends a `pause`; the grace period re-arms from `now`.
    pub fn resume(&self, writer: WriterId, now: u64) -> Result<(), TrackerError> {
        let cell = self.cell(writer)?;
        Meta(cell.meta.load(Ordering::Acquire)).check(writer)?;
        if let Some(e) = self.change_writer_with(cell, writer, now, |m| m.with_paused(false))? {
            self.stale.push_intake(e);
        }
        self.help_backlog(Some(now));
        Ok(())
    }

    /// Challenges and evicts stale writers (see the module docs). Evictions unpin at once and
    /// are reported as events; so are challenges.
    pub fn sweep(&self, now: u64) -> SweepOutcome {
        let grace = self.stall_grace_ms();
        let mut out = SweepOutcome::default();
        let mut events = Vec::new();
        // One budget for the whole sweep, shared by the drains of the heads it releases.
        let mut budget = self.call_budget();
        {
            let mut heap = self.stale.heap.lock();
            self.absorb(&mut heap);
            let mut rearm = Vec::new();
            while let Some((top, live)) = self.next_expired(&mut heap, now, grace) {
                if now.saturating_sub(live.progress_at) <= grace {
                    rearm.push(top.at(live.progress_at));
                    continue;
                }
                if live.state.has(MUT) {
                    // Someone is changing the stint right now (progress, touch, pause): look
                    // again at the next sweep.
                    rearm.push(top);
                    continue;
                }
                let reason = if live.meta.orphaned() {
                    EvictReason::Orphaned
                } else if live.state.has(CHALLENGED) {
                    EvictReason::Stalled
                } else {
                    if live
                        .entry
                        .cas(live.state, live.state.with(CHALLENGED, 0))
                        .is_err()
                    {
                        heap.push(Reverse(top)); // changed under us: judge it again
                        continue;
                    }
                    events.push(Event::Challenged(live.writer));
                    out.challenged += 1;
                    // Looked at again by the next sweep, not this one.
                    rearm.push(top);
                    continue;
                };
                if live
                    .entry
                    .cas(live.state, live.state.ended(Some(reason.to_u8())))
                    .is_err()
                {
                    heap.push(Reverse(top)); // changed under us: judge it again
                    continue;
                }
                let spent = self.finish_eviction(
                    live.writer,
                    live.entry,
                    live.state,
                    reason,
                    Some(now),
                    budget,
                );
                budget = budget.saturating_sub(spent);
                events.push(Event::Evicted(live.writer, reason));
                out.evicted += 1;
            }
            heap.extend(rearm.into_iter().map(Reverse));
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
        if budget == self.call_budget() {
            self.help_backlog(Some(now));
        }
        out
    }

    /// The pending, unpaused writers past the grace period at `now`, sorted by id. A query: it
    /// challenges and evicts nothing.
    pub fn stalled(&self, now: u64) -> Vec<WriterId> {
        let grace = self.stall_grace_ms();
        let mut found = Vec::new();
        let mut heap = self.stale.heap.lock();
        self.absorb(&mut heap);
        let mut back = Vec::new();
        while let Some((top, live)) = self.next_expired(&mut heap, now, grace) {
            if now.saturating_sub(live.progress_at) > grace {
                found.push(live.writer);
            }
            back.push(top.at(live.progress_at));
        }
        heap.extend(back.into_iter().map(Reverse));
        found.sort();
        found
    }

    /// Moves up to `max` queued events into `out` (oldest first); returns how many.
    pub fn take_events(&self, out: &mut Vec<Event>, max: usize) -> usize {
        let n = {
            let mut q = self.stale.events.lock();
            let n = max.min(q.len());
            out.extend(q.drain(..n));
            n
        };
        self.help_backlog(None);
        n
    }

    /// Evicts `writer` for `reason` (a `crash` down): ends its live stint as an eviction, or
    /// marks an idle writer evicted, and reports it. Returns whether it drained for the head it
    /// released.
    fn evict(
        &self,
        cell: &Cell,
        writer: WriterId,
        reason: EvictReason,
        now: u64,
    ) -> Result<bool, TrackerError> {
        let mut drained = false;
        loop {
            match self.bound(cell, writer) {
                Err(EvictedBy(_)) => return Err(TrackerError::EvictedWriter(writer)),
                Ok(Bound::Live { entry, tag, .. }) => {
                    if let Ok(s) = entry.end(tag, Some(reason.to_u8())) {
                        let budget = self.call_budget();
                        self.finish_eviction(writer, entry, s, reason, Some(now), budget);
                        drained = s.has(super::entry::HEAD);
                        break;
                    }
                    // The stint ended under us: look again.
                }
                Ok(Bound::Idle) => {
                    // Under the commit lock, so no commit starts a stint for the writer while
                    // we mark it: one that ran before us left a stint we see below.
                    let committer = self.committer.lock();
                    if !matches!(self.bound(cell, writer), Ok(Bound::Idle)) {
                        continue; // a commit or an eviction got there first: look again
                    }
                    self.mark_evicted(cell, writer, reason)?;
                    drop(committer);
                    self.count_eviction(reason);
                    break;
                }
            }
        }
        self.stale.push_events(&[Event::Evicted(writer, reason)]);
        Ok(drained)
    }

    /// After a successful eviction CAS on the stint (state before it: `s`): counts the end,
    /// marks the cell evicted, lifts `EVICTING`, and drains (within `budget`) if the drain was
    /// parked there. Returns the drain's work.
    fn finish_eviction(
        &self,
        writer: WriterId,
        entry: &Entry,
        s: State,
        reason: EvictReason,
        now: Option<u64>,
        budget: usize,
    ) -> usize {
        self.count_end(writer);
        if let Some(cell) = self.cells.get(writer.index()) {
            // An unregister that raced us already freed the id: nothing to mark.
            let _ = self.mark_evicted(cell, writer, reason);
        }
        let mut cur = entry.load();
        while cur.tag() == s.tag() && cur.has(EVICTING) {
            // Release (in `cas`): a thread that sees the marker gone sees the cell evicted.
            match entry.cas(cur, cur.ended(None)) {
                Ok(()) => break,
                Err(actual) => cur = actual,
            }
        }
        self.count_eviction(reason);
        if s.has(super::entry::HEAD) {
            self.head_released_within(now, budget)
        } else {
            0
        }
    }

    fn count_eviction(&self, reason: EvictReason) {
        // Relaxed: statistics.
        self.counters
            .evicted
            .of(reason)
            .fetch_add(1, Ordering::Relaxed);
    }

    /// CAS the cell to evicted. Fails if the id is no longer registered (or already evicted).
    fn mark_evicted(
        &self,
        cell: &Cell,
        writer: WriterId,
        reason: EvictReason,
    ) -> Result<(), TrackerError> {
        let mut meta = Meta(cell.meta.load(Ordering::Acquire));
        loop {
            meta.check(writer)?;
            // AcqRel: ordered with every other change of the cell's word.
            match cell.meta.compare_exchange(
                meta.0,
                meta.evicted(reason).0,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(()),
                Err(actual) => meta = Meta(actual),
            }
        }
    }

    /// Changes writer-level flags (`PAUSED`, `ORPHANED`). If the writer is pending, the change
    /// happens under its stint's `MUT`, so a sweep that judged the stint before it fails its
    /// CAS and judges again; a pending writer not in the sweep index is re-indexed (returned).
    fn change_writer(
        &self,
        cell: &Cell,
        writer: WriterId,
        f: impl Fn(Meta) -> Meta,
    ) -> Result<Option<IndexEntry>, TrackerError> {
        self.change_writer_inner(cell, writer, None, f)
    }

    /// [`change_writer`](Self::change_writer), also re-arming a pending writer's grace period
    /// from `now` and clearing its challenge (`resume`).
    fn change_writer_with(
        &self,
        cell: &Cell,
        writer: WriterId,
        now: u64,
        f: impl Fn(Meta) -> Meta,
    ) -> Result<Option<IndexEntry>, TrackerError> {
        self.change_writer_inner(cell, writer, Some(now), f)
    }

    fn change_writer_inner(
        &self,
        cell: &Cell,
        writer: WriterId,
        rearm: Option<u64>,
        f: impl Fn(Meta) -> Meta,
    ) -> Result<Option<IndexEntry>, TrackerError> {
        let live = loop {
            match self.bound(cell, writer) {
                Err(EvictedBy(_)) => return Err(TrackerError::EvictedWriter(writer)),
                Ok(Bound::Live {
                    entry, index, tag, ..
                }) => {
                    if let Ok(held) = entry.acquire(tag) {
                        break Some((entry, index, tag, held));
                    }
                    // The stint ended under us (completed or evicted): look again.
                }
                Ok(Bound::Idle) => break None,
            }
        };
        let mut meta = Meta(cell.meta.load(Ordering::Acquire));
        let changed = loop {
            if let Err(e) = meta.check(writer) {
                break Err(e);
            }
            // AcqRel: ordered with every other change of the cell's word.
            match cell
                .meta
                .compare_exchange(meta.0, f(meta).0, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break Ok(f(meta)),
                Err(actual) => meta = Meta(actual),
            }
        };
        let Some((entry, index, tag, held)) = live else {
            return changed.map(|_| None);
        };
        let mut set = 0;
        let mut clear = 0;
        let mut reindex = None;
        if let Ok(m) = changed {
            if let Some(now) = rearm {
                self.raise_progress(index, now);
                clear |= CHALLENGED;
            }
            if !m.paused() && !held.has(INDEXED) {
                set |= INDEXED;
                // Relaxed: we hold MUT, the only writer of progress besides the committer at
                // stint start.
                let at = self.progress_of(index).load(Ordering::Relaxed);
                reindex = Some(IndexEntry::new(at, writer.index(), index, tag));
            }
        }
        entry.release(held, set, clear);
        changed.map(|_| reindex)
    }

    /// `progress_at = max(progress_at, now)`. Caller holds the stint's `MUT`.
    fn raise_progress(&self, index: u32, now: u64) {
        let p = self.progress_of(index);
        // Relaxed: published by the caller's release CAS.
        if now > p.load(Ordering::Relaxed) {
            p.store(now, Ordering::Relaxed);
        }
    }

    /// Pops index entries whose key is past the grace period until one names a live, unpaused
    /// stint; returns it with its real progress time (which may be recent: keys are lazy).
    /// Dead and paused entries are dropped on the way.
    fn next_expired(
        &self,
        heap: &mut BinaryHeap<Reverse<IndexEntry>>,
        now: u64,
        grace: u64,
    ) -> Option<(IndexEntry, Live<'_>)> {
        while let Some(&Reverse(top)) = heap.peek() {
            if now.saturating_sub(top.progress_at) <= grace {
                return None;
            }
            heap.pop();
            if let Probe::Live(live) = self.probe(&top) {
                return Some((top, live));
            }
        }
        None
    }

    /// The oldest `progress_at` among pending, unpaused writers, looking at most at
    /// `OLDEST_BUDGET` index entries (stale keys are re-armed on the way, so the answer is
    /// exact unless the budget ran out; then it is the oldest key left, an upper bound of the
    /// age).
    pub(super) fn oldest_progress(&self) -> Option<u64> {
        let mut heap = self.stale.heap.lock();
        self.absorb(&mut heap);
        for _ in 0..OLDEST_BUDGET {
            let &Reverse(top) = heap.peek()?;
            match self.probe(&top) {
                Probe::Live(live) if live.progress_at == top.progress_at => {
                    return Some(live.progress_at);
                }
                Probe::Live(live) => {
                    heap.pop();
                    heap.push(Reverse(top.at(live.progress_at)));
                }
                Probe::Dead | Probe::Paused => {
                    heap.pop();
                }
            }
        }
        heap.peek().map(|Reverse(e)| e.progress_at)
    }

    /// Collects new stints (from the committer's buffer, briefly taking the commit lock) and
    /// re-indexed ones into the heap. Lock order: heap, then commit, then intake.
    fn absorb(&self, heap: &mut BinaryHeap<Reverse<IndexEntry>>) {
        let fresh = {
            let mut cs = self.committer.lock();
            cs.fresh_scan = 0;
            std::mem::take(&mut cs.fresh)
        };
        heap.extend(fresh.into_iter().map(Reverse));
        let mut intake = self.stale.intake.lock();
        heap.extend(intake.drain(..).map(Reverse));
    }

    /// When nobody sweeps, the committer's buffer of new stints would grow without bound:
    /// once it is large and mostly dead, drop dead entries, at most `TIDY_BUDGET` per commit.
    pub(super) fn tidy_fresh(&self, cs: &mut Committer) {
        if cs.fresh_scan == 0 {
            if cs.fresh.len() <= 2 * self.pending() as usize {
                return;
            }
            cs.fresh_scan = 1; // start a pass (position + 1, so 0 means "none")
            cs.fresh_kept = 0;
        }
        let mut r = cs.fresh_scan - 1;
        let end = cs.fresh.len().min(r + TIDY_BUDGET);
        while r < end {
            let e = cs.fresh[r];
            if self.stint_live(&e) {
                cs.fresh[cs.fresh_kept] = e;
                cs.fresh_kept += 1;
            }
            r += 1;
        }
        if r == cs.fresh.len() {
            cs.fresh.truncate(cs.fresh_kept);
            cs.fresh_scan = 0;
        } else {
            cs.fresh_scan = r + 1;
        }
    }

    /// False when the entry's stint certainly ended.
    fn stint_live(&self, e: &IndexEntry) -> bool {
        self.entries
            .get(e.entry)
            .is_some_and(|entry| entry.load().is_stint(e.tag))
    }

    /// Classifies an index entry; a paused writer's stint loses its index entry (`INDEXED`
    /// cleared, so `resume` re-adds it).
    fn probe(&self, e: &IndexEntry) -> Probe<'_> {
        let Some(entry) = self.entries.get(e.entry) else {
            return Probe::Dead;
        };
        loop {
            let state = entry.load();
            if !state.is_stint(e.tag) {
                return Probe::Dead;
            }
            // Relaxed: ordered after the state load (Acquire) that published them.
            let writer = WriterId::from_raw(entry.owner.load(Ordering::Relaxed));
            let progress_at = self.progress_of(e.entry).load(Ordering::Relaxed);
            let Some(cell) = self.cells.get(writer.index()) else {
                return Probe::Dead;
            };
            let meta = Meta(cell.meta.load(Ordering::Acquire));
            if !meta.holds(writer) || meta.status() != Status::Registered {
                return Probe::Dead; // unregistering or evicting: that call ends the stint
            }
            if meta.paused() {
                if state.has(MUT) {
                    // A pause (or resume) is under way: wait for it, it is a few stores.
                    crate::sync::Backoff::new().snooze();
                    continue;
                }
                if entry.cas(state, state.with(0, INDEXED)).is_ok() {
                    return Probe::Paused;
                }
                continue;
            }
            return Probe::Live(Live {
                entry,
                state,
                writer,
                meta,
                progress_at,
            });
        }
    }
}
