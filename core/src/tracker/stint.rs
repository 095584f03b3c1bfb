//! Internals shared by the other parts: looking ids up, the binding of a writer to its
//! stint, starting and ending stints, reserving entries.

use super::cell::{Bind, Cell, Meta, Status};
use super::entry;
use super::entry::{Entry, HEAD, RESERVED, State};
use super::seg::AllocFailed;
use super::stale::IndexEntry;
use super::{
    Bound, CLOCK_SCAN, Committer, EvictReason, EvictedBy, STRIPES, Tracker, TrackerError, WriterId,
};
use crate::Offset;
use crate::sync::{AtomicU64, Ordering};

impl Tracker {
    /// Writers pending now (a snapshot: exact when nothing runs concurrently).
    pub(super) fn pending(&self) -> u64 {
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
    pub(super) fn cell(&self, writer: WriterId) -> Result<&Cell, TrackerError> {
        self.cells
            .get(writer.index())
            .ok_or(TrackerError::UnknownWriter(writer))
    }

    #[inline]
    pub(super) fn entry(&self, index: u32) -> &Entry {
        self.entries
            .get(index)
            .expect("bindings and deliveries name allocated entries")
    }

    #[inline]
    pub(super) fn progress_of(&self, index: u32) -> &AtomicU64 {
        self.progress
            .get(index)
            .expect("the progress table grows with the entry table")
    }

    /// Follows the writer's binding: its live stint, if any, or the eviction that just ended
    /// it (an eviction's entry carries `EVICTING` until the cell says evicted).
    #[inline(always)]
    pub(super) fn bound<'a>(
        &'a self,
        cell: &Cell,
        writer: WriterId,
    ) -> Result<Bound<'a>, EvictedBy> {
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
    pub(super) fn start_stint(
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
    pub(super) fn reserve_entries(&self, cs: &mut Committer, n: usize) -> Result<(), AllocFailed> {
        if cs.ready.len() >= n {
            return Ok(());
        }
        self.reserve_more(cs, n)
    }

    pub(super) fn reserve_more(&self, cs: &mut Committer, n: usize) -> Result<(), AllocFailed> {
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
    pub(super) fn end_stint(
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
    pub(super) fn end_stint_quiet(
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
    pub(super) fn count_end(&self, writer: WriterId) {
        // Relaxed: statistics.
        #[allow(clippy::modulo_one, reason = "STRIPES is 1 under loom")]
        let stripe = writer.index() as usize % STRIPES;
        self.ends[stripe].fetch_add(1, Ordering::Relaxed);
    }

    /// Ends the writer's live stint, if it has one, as a removal.
    pub(super) fn end_bound_stint(
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
