//! The tracker's oracles.
//!
//! - [`ExactModel`]: the contract of docs/CONTRACT.md §3–§4 written the obvious way: every commit
//!   keeps the set of writers that still owe it; the exact ack is the earliest commit with a
//!   non-empty set, minus one. It also implements liveness and sweeps by scanning every writer, and
//!   issues writer ids exactly like [`Tracker`](tidemark::Tracker), so results and errors compare
//!   1:1.
//! - [`ElectricTracker`]: Electric's FlushTracker algorithm (the "never below" baseline and the
//!   benchmarks' reference tracker).
//!
//! Both are slow on purpose (O(commits) per call for the exact model) and single-threaded.

use std::collections::{BTreeSet, HashMap};

use tidemark::{DownClass, Event, EvictReason, Offset, TrackerError, WriterId};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MStatus {
    Free,
    Idle,
    Pending,
    Evicted(EvictReason),
}

#[derive(Clone, Debug)]
struct MWriter {
    generation: u32,
    status: MStatus,
    last_sent: Offset,
    flushed: Option<Offset>,
    progress_at: u64,
    paused: bool,
    challenged: bool,
    orphaned: bool,
}

#[derive(Clone, Debug)]
struct MCommit {
    offset: Offset,
    owed_by: BTreeSet<u32>,
}

/// The exact-ack model (see the module docs). Same method names and errors as `Tracker`.
#[derive(Clone, Debug)]
pub struct ExactModel {
    writers: Vec<MWriter>,
    free: Vec<u32>,
    commits: Vec<MCommit>,
    /// Index of the first commit that may still be owed (all before it are done).
    first_open: usize,
    last_seen: Option<Offset>,
    floor: Option<u64>,
    ack: Option<u64>,
    grace_ms: u64,
    events: Vec<Event>,
}

impl ExactModel {
    /// A model with the given initial ack and grace period.
    pub fn new(initial_ack: Option<u64>, grace_ms: u64) -> Self {
        ExactModel {
            writers: Vec::new(),
            free: Vec::new(),
            commits: Vec::new(),
            first_open: 0,
            last_seen: None,
            floor: initial_ack,
            ack: initial_ack,
            grace_ms,
            events: Vec::new(),
        }
    }

    /// The exact ack.
    pub fn ack(&self) -> Option<u64> {
        self.ack
    }

    /// The last commit's offset.
    pub fn last_seen(&self) -> Option<Offset> {
        self.last_seen
    }

    /// Changes the grace period.
    pub fn set_stall_grace_ms(&mut self, ms: u64) {
        self.grace_ms = ms;
    }

    /// Registers a writer (ids as the tracker issues them: LIFO reuse, generation bump).
    pub fn register(&mut self) -> WriterId {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.writers.push(MWriter {
                    generation: 1,
                    status: MStatus::Free,
                    last_sent: Offset::ZERO,
                    flushed: None,
                    progress_at: 0,
                    paused: false,
                    challenged: false,
                    orphaned: false,
                });
                (self.writers.len() - 1) as u32
            }
        };
        let w = &mut self.writers[index as usize];
        w.status = MStatus::Idle;
        w.flushed = None;
        w.paused = false;
        w.challenged = false;
        w.orphaned = false;
        w.progress_at = 0;
        WriterId::from_parts(index, w.generation)
    }

    fn lookup(&self, id: WriterId) -> Result<usize, TrackerError> {
        let i = id.index() as usize;
        match self.writers.get(i) {
            Some(w) if w.generation == id.generation() && w.status != MStatus::Free => {
                if let MStatus::Evicted(_) = w.status {
                    Err(TrackerError::EvictedWriter(id))
                } else {
                    Ok(i)
                }
            }
            _ => Err(TrackerError::UnknownWriter(id)),
        }
    }

    /// Releases an id (evicted ones too).
    pub fn unregister(&mut self, id: WriterId) -> Result<(), TrackerError> {
        let i = id.index() as usize;
        match self.writers.get(i) {
            Some(w) if w.generation == id.generation() && w.status != MStatus::Free => {}
            _ => return Err(TrackerError::UnknownWriter(id)),
        }
        self.end_stint(i);
        let w = &mut self.writers[i];
        w.status = MStatus::Free;
        w.generation = w.generation.wrapping_add(1);
        if w.generation != 0 {
            self.free.push(i as u32);
        }
        self.recompute();
        Ok(())
    }

    /// A commit (see `Tracker::commit`).
    pub fn commit(
        &mut self,
        offset: Offset,
        writers: &[WriterId],
        now: u64,
    ) -> Result<(), TrackerError> {
        if offset.tx == u64::MAX {
            return Err(TrackerError::InvalidArgument(
                "commit tx must be below u64::MAX",
            ));
        }
        if let Some(last) = self.last_seen.map(|o| o.tx).or(self.floor)
            && offset.tx <= last
        {
            return Err(TrackerError::OffsetRegressed {
                last,
                offered: offset.tx,
            });
        }
        let mut idx = Vec::new();
        for &w in writers {
            idx.push(self.lookup(w)?);
        }
        let mut owed_by = BTreeSet::new();
        for i in idx {
            let w = &mut self.writers[i];
            if w.status != MStatus::Pending {
                w.status = MStatus::Pending;
                w.flushed = None;
                w.progress_at = now;
                w.challenged = false;
            }
            w.last_sent = offset;
            owed_by.insert(i as u32);
        }
        self.commits.push(MCommit { offset, owed_by });
        self.last_seen = Some(offset);
        self.recompute();
        Ok(())
    }

    /// A flush report (see `Tracker::flushed`).
    pub fn flushed(&mut self, id: WriterId, offset: Offset, now: u64) -> Result<(), TrackerError> {
        let i = self.lookup(id)?;
        let w = &mut self.writers[i];
        if w.status != MStatus::Pending {
            return Ok(());
        }
        if offset >= w.last_sent {
            w.flushed = Some(w.flushed.map_or(offset, |f| f.max(offset)));
            self.end_stint(i);
        } else if w.flushed.is_none_or(|f| offset > f) {
            w.flushed = Some(offset);
            w.progress_at = w.progress_at.max(now);
            w.challenged = false;
            for c in &mut self.commits[self.first_open..] {
                if c.offset <= offset {
                    c.owed_by.remove(&(i as u32));
                }
            }
        }
        self.recompute();
        Ok(())
    }

    /// Unpins a writer (see `Tracker::remove`).
    pub fn remove(&mut self, id: WriterId) -> Result<(), TrackerError> {
        let i = self.lookup(id)?;
        self.end_stint(i);
        self.recompute();
        Ok(())
    }

    /// Liveness signal (see `Tracker::down`).
    pub fn down(&mut self, id: WriterId, class: DownClass, _now: u64) -> Result<(), TrackerError> {
        let i = self.lookup(id)?;
        match class {
            DownClass::Crash => {
                self.evict(i, EvictReason::Crashed);
                self.events.push(Event::Evicted(id, EvictReason::Crashed));
            }
            DownClass::Cleanup => {
                self.end_stint(i);
                self.events.push(Event::Removed(id));
            }
            DownClass::Teardown => {
                let w = &mut self.writers[i];
                w.orphaned = true;
                w.paused = false;
            }
        }
        self.recompute();
        Ok(())
    }

    /// Answers a challenge (see `Tracker::touch`).
    pub fn touch(&mut self, id: WriterId, now: u64) -> Result<(), TrackerError> {
        let i = self.lookup(id)?;
        let w = &mut self.writers[i];
        if w.status == MStatus::Pending {
            w.progress_at = w.progress_at.max(now);
            w.challenged = false;
        }
        Ok(())
    }

    /// Holds a writer back (see `Tracker::pause`).
    pub fn pause(&mut self, id: WriterId) -> Result<(), TrackerError> {
        let i = self.lookup(id)?;
        self.writers[i].paused = true;
        Ok(())
    }

    /// Ends a pause (see `Tracker::resume`).
    pub fn resume(&mut self, id: WriterId, now: u64) -> Result<(), TrackerError> {
        let i = self.lookup(id)?;
        let w = &mut self.writers[i];
        w.paused = false;
        if w.status == MStatus::Pending {
            w.progress_at = w.progress_at.max(now);
            w.challenged = false;
        }
        Ok(())
    }

    /// Pending, unpaused writers past the grace period, sorted by id.
    pub fn stalled(&self, now: u64) -> Vec<WriterId> {
        let mut out: Vec<WriterId> = self
            .writers
            .iter()
            .enumerate()
            .filter(|(_, w)| {
                w.status == MStatus::Pending
                    && !w.paused
                    && now.saturating_sub(w.progress_at) > self.grace_ms
            })
            .map(|(i, w)| WriterId::from_parts(i as u32, w.generation))
            .collect();
        out.sort();
        out
    }

    /// A sweep by scanning every writer. Returns the events it produced, sorted.
    pub fn sweep(&mut self, now: u64) -> Vec<Event> {
        let mut produced = Vec::new();
        for id in self.stalled(now) {
            let i = id.index() as usize;
            let w = &mut self.writers[i];
            if w.orphaned {
                self.evict(i, EvictReason::Orphaned);
                produced.push(Event::Evicted(id, EvictReason::Orphaned));
            } else if w.challenged {
                self.evict(i, EvictReason::Stalled);
                produced.push(Event::Evicted(id, EvictReason::Stalled));
            } else {
                w.challenged = true;
                produced.push(Event::Challenged(id));
            }
        }
        self.recompute();
        produced.sort_by_key(|e| format!("{e:?}"));
        self.events.extend(produced.iter().copied());
        produced
    }

    /// Takes every queued event.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// The last offset sent to a registered writer (its newest delivery), if any.
    pub fn last_sent(&self, id: WriterId) -> Option<Offset> {
        let w = self.writers.get(id.index() as usize)?;
        (w.generation == id.generation() && w.status == MStatus::Pending).then_some(w.last_sent)
    }

    /// Is the writer pending?
    pub fn is_pending(&self, id: WriterId) -> bool {
        self.lookup(id)
            .is_ok_and(|i| self.writers[i].status == MStatus::Pending)
    }

    fn evict(&mut self, i: usize, reason: EvictReason) {
        self.end_stint(i);
        let w = &mut self.writers[i];
        w.status = MStatus::Evicted(reason);
        w.challenged = false;
        w.paused = false;
        w.orphaned = false;
    }

    fn end_stint(&mut self, i: usize) {
        let w = &mut self.writers[i];
        if w.status == MStatus::Pending {
            w.status = MStatus::Idle;
            w.challenged = false;
        }
        for c in &mut self.commits[self.first_open..] {
            c.owed_by.remove(&(i as u32));
        }
    }

    fn recompute(&mut self) {
        while self.first_open < self.commits.len()
            && self.commits[self.first_open].owed_by.is_empty()
        {
            self.first_open += 1;
        }
        let exact = match self.commits.get(self.first_open) {
            Some(c) => c.offset.tx.checked_sub(1),
            None => self.last_seen.map(|o| o.tx),
        };
        // The exact value itself can only grow; max() documents that the ack never moves back.
        if exact > self.ack {
            self.ack = exact;
        }
    }
}

/// An offset whose `tx` may be −1: Electric's `global` starts at `(−1, 0)`, and a new writer at
/// tx 0 enters with `flushed = (−1, 0)`. Ordered by `tx`, then `op`.
type RefOffset = (i64, u64);

fn widen(o: Offset) -> RefOffset {
    (o.tx as i64, o.op)
}

/// One pending writer's entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RefEntry {
    last_sent: RefOffset,
    flushed: RefOffset,
}

/// Electric's FlushTracker algorithm (docs/CONTRACT.md §3 "Reference algorithm"), keyed by any
/// writer handle `W`.
///
/// State: `last_seen` (the last commit's offset), `global` (starts at `(−1, 0)`), a map
/// writer → `(last_sent, flushed)` of pending writers (a `HashMap` with std's default hasher)
/// and an ordered index of the pending writers by `flushed` (a `BTreeSet` of
/// `(flushed, writer)`).
///
/// - **Commit** at `(T, op)`: a writer not in the map enters with `flushed = (T − 1, 0)`; one
///   already in it gets `last_sent = (T, op)`. Then `last_seen = (T, op)`, and if the map is
///   (still) empty, recompute.
/// - **Flush report**: ignored if the writer is not in the map; if the report is at or beyond
///   `last_sent` the writer leaves the map, otherwise `flushed = report` (no max: a lower report
///   moves it back, as in the original). Then recompute.
/// - **Remove** (also used for evictions): the writer leaves the map; recompute.
/// - **Recompute**: map empty → `global = last_seen`, notify `last_seen.tx`; otherwise
///   `global = max(global, min flushed)` and, if that changed `global`, notify `global.tx − 1`.
///   Notified values below 0 mean "nothing yet".
///
/// One documented deviation: Electric completes a writer only when the report *equals*
/// `last_sent`; here a report beyond `last_sent` completes it too (the original would otherwise
/// ack offsets that were never committed, which no safe tracker can match).
///
/// Like the original it notifies duplicates, can notify −1 at start-up, lags by one commit while
/// a new writer (at its artificial `(T − 1, 0)`) is the minimum, and can notify a lower value
/// after replays. [`last_notified`](Self::last_notified) is that raw output;
/// [`ack`](Self::ack) is the highest non-negative value notified, what a host that never moves
/// its acknowledgement backwards would send upstream.
#[derive(Clone, Debug)]
pub struct ElectricTracker<W: std::hash::Hash + Eq + Ord + Copy = u64> {
    last_seen: Option<RefOffset>,
    global: RefOffset,
    map: HashMap<W, RefEntry>,
    by_flushed: BTreeSet<(RefOffset, W)>,
    notified: Option<i64>,
    highest: Option<u64>,
    notifications: u64,
}

/// The name [`ElectricTracker`] had as `tidemark::model::ReferenceModel`.
pub type ReferenceModel<W> = ElectricTracker<W>;

impl<W: std::hash::Hash + Eq + Ord + Copy> Default for ElectricTracker<W> {
    fn default() -> Self {
        Self::new()
    }
}

impl<W: std::hash::Hash + Eq + Ord + Copy> ElectricTracker<W> {
    /// An empty tracker: `global = (−1, 0)`, nothing seen, nothing notified.
    pub fn new() -> Self {
        ElectricTracker {
            last_seen: None,
            global: (-1, 0),
            map: HashMap::new(),
            by_flushed: BTreeSet::new(),
            notified: None,
            highest: None,
            notifications: 0,
        }
    }

    /// A commit whose last offset is `offset`, delivered to `writers`.
    pub fn commit(&mut self, offset: Offset, writers: &[W]) {
        let at = widen(offset);
        let entered = (at.0 - 1, 0);
        for &w in writers {
            match self.map.get_mut(&w) {
                Some(e) => e.last_sent = at,
                None => {
                    self.map.insert(
                        w,
                        RefEntry {
                            last_sent: at,
                            flushed: entered,
                        },
                    );
                    self.by_flushed.insert((entered, w));
                }
            }
        }
        self.last_seen = Some(at);
        if self.map.is_empty() {
            self.recompute();
        }
    }

    /// `writer` reports everything up to `offset` flushed.
    pub fn flushed(&mut self, writer: W, offset: Offset) {
        let report = widen(offset);
        let Some(e) = self.map.get_mut(&writer) else {
            return;
        };
        let old = e.flushed;
        if report >= e.last_sent {
            self.map.remove(&writer);
            self.by_flushed.remove(&(old, writer));
        } else {
            e.flushed = report;
            self.by_flushed.remove(&(old, writer));
            self.by_flushed.insert((report, writer));
        }
        self.recompute();
    }

    /// `writer` is gone: it leaves the map.
    pub fn remove(&mut self, writer: W) {
        if let Some(e) = self.map.remove(&writer) {
            self.by_flushed.remove(&(e.flushed, writer));
        }
        self.recompute();
    }

    fn recompute(&mut self) {
        match self.by_flushed.first() {
            None => {
                if let Some(seen) = self.last_seen {
                    self.global = seen;
                    self.notify(seen.0);
                }
            }
            Some(&(min, _)) => {
                let next = self.global.max(min);
                if next != self.global {
                    self.global = next;
                    self.notify(next.0 - 1);
                }
            }
        }
    }

    fn notify(&mut self, tx: i64) {
        self.notified = Some(tx);
        self.notifications += 1;
        if let Ok(v) = u64::try_from(tx) {
            self.highest = self.highest.max(Some(v));
        }
    }

    /// The highest value notified that is not negative ("nothing yet" before one).
    pub fn ack(&self) -> Option<u64> {
        self.highest
    }

    /// The last value notified, as is (may be −1, a duplicate, or lower than an earlier one).
    pub fn last_notified(&self) -> Option<i64> {
        self.notified
    }

    /// How many notifications were sent (duplicates and negative values included).
    pub fn notifications(&self) -> u64 {
        self.notifications
    }

    /// Writers in the map.
    pub fn pending(&self) -> usize {
        self.map.len()
    }

    /// The last commit's offset.
    pub fn last_seen(&self) -> Option<Offset> {
        self.last_seen.map(|(tx, op)| Offset::new(tx as u64, op))
    }
}
