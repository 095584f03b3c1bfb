//! Reading the tracker: the ack (and waiting for it), the last commit, the pinning writer,
//! statistics, work counters, memory.

use std::time::{Duration, Instant};

use super::cell::Meta;
use super::entry::{CHALLENGED, HAS_FLUSHED};
use super::stale::IndexEntry;
use super::{Pinning, Planned, Tracker, TrackerStats, WorkStats, WriterId};
use crate::Offset;
use crate::sync::{Ordering, fence};

impl Tracker {
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
            evicted_crashed: c.evicted.crashed.load(Ordering::Relaxed),
            evicted_orphaned: c.evicted.orphaned.load(Ordering::Relaxed),
            evicted_stalled: c.evicted.stalled.load(Ordering::Relaxed),
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
}
