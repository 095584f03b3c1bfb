//! The flush path: commits, flush reports, removals.

use super::cell::{Cell, Meta};
use super::counters::Block;
use super::entry::{CHALLENGED, HAS_FLUSHED, HEAD, MUT};
use super::log::Delivery;
use super::{Bound, Committer, EvictedBy, Planned, Tracker, TrackerError, WriterId};
use super::{drain, stale};
use crate::Offset;
use crate::sync::Ordering;

impl Tracker {
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
    pub(super) fn redeliver(
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
}
