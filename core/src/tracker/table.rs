//! The writer table: one slot per registered writer, addressed by a dense `u32` index.
//!
//! Slots live in segments whose sizes double (`BASE`, `2·BASE`, `4·BASE`, …), so the table grows
//! without ever moving a slot: a reader holding `&Slot` stays valid for the tracker's lifetime.
//! Segments are allocated under the registry lock and published with a `Release` store; lookups
//! are one `Acquire` load plus index arithmetic, no lock.

use std::ptr;

use crate::Offset;
use std::ops::{Deref, DerefMut};

use crate::sync::{AtomicPtr, AtomicU32, Mutex, MutexGuard, Ordering};

/// Slots in the first segment. Small, so a tracker with a handful of writers stays small.
#[cfg(not(loom))]
const BASE_SHIFT: u32 = 6;
/// Under loom every slot is a modelled mutex: keep segments tiny so models stay cheap.
#[cfg(loom)]
const BASE_SHIFT: u32 = 1;
const BASE: u64 = 1 << BASE_SHIFT;
/// Enough segments to address every `u32` index: BASE · (2^SEGMENTS − 1) ≥ 2^32.
const SEGMENTS: usize = 33 - BASE_SHIFT as usize;

/// The lifecycle of a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Status {
    /// Not registered.
    Free,
    /// Registered, owes nothing.
    Idle,
    /// Registered and owes at least one commit.
    Pending,
    /// Evicted by a sweep or a `crash` down; the id is dead until unregistered.
    Evicted,
}

/// Flag bits in [`WriterState::flags`].
pub(crate) mod flag {
    /// The writer has reported at least one flush (so `flushed` is meaningful).
    pub(crate) const HAS_FLUSHED: u8 = 1 << 0;
    /// The host holds the writer back on purpose: its staleness clock does not run.
    pub(crate) const PAUSED: u8 = 1 << 1;
    /// A sweep challenged the writer and nothing answered yet.
    pub(crate) const CHALLENGED: u8 = 1 << 2;
    /// The host reported the writer's process gone (`teardown`).
    pub(crate) const ORPHANED: u8 = 1 << 3;
    /// The sweep index holds an entry for the current pending stint.
    pub(crate) const INDEXED: u8 = 1 << 4;
}

/// Everything the tracker knows about one writer, except its stint epoch (which lives beside
/// it in [`Slot`] so it can be read without the lock). Guarded by the slot's own lock: no other
/// lock is needed to read or change it, so flush reports from different writers never contend.
///
/// Fields are ordered so the struct packs into 48 bytes; with the lock byte and the epoch a
/// slot is 64 bytes.
#[derive(Debug)]
pub(crate) struct WriterState {
    /// Last offset of the newest commit delivered during the current pending stint.
    pub(crate) last_sent: Offset,
    /// Highest offset the writer reported in its current stint (meaningful when `HAS_FLUSHED`,
    /// which a new stint clears); never decreases within a stint.
    pub(crate) flushed: Offset,
    /// Caller-supplied ms of the last progress (becoming pending, flush progress, touch, resume).
    pub(crate) progress_at: u64,
    /// Generation of the id currently holding this slot; bumped on unregister.
    pub(crate) generation: u32,
    pub(crate) status: Status,
    pub(crate) flags: u8,
    /// Why the writer was evicted (when `status == Evicted`).
    pub(crate) reason: u8,
}

impl WriterState {
    const fn new() -> Self {
        WriterState {
            last_sent: Offset::ZERO,
            flushed: Offset::ZERO,
            progress_at: 0,
            generation: 1,
            status: Status::Free,
            flags: 0,
            reason: 0,
        }
    }

    #[inline]
    pub(crate) fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }

    #[inline]
    pub(crate) fn set(&mut self, f: u8, on: bool) {
        if on {
            self.flags |= f;
        } else {
            self.flags &= !f;
        }
    }
}

/// One writer's slot: its state behind a one-byte lock, and its stint epoch.
///
/// The epoch counts pending stints: it is bumped (under the lock) whenever a stint ends
/// (completion, remove, eviction, unregister), so a delivery or sweep entry tagged with an older
/// epoch is known dead. It only grows, so a lock-free reader that sees it changed may conclude
/// "that stint ended" without the lock; one that sees it unchanged must lock and look.
pub(crate) struct Slot {
    state: Mutex<WriterState>,
    epoch: AtomicU32,
}

impl Slot {
    fn new() -> Self {
        Slot {
            state: Mutex::new(WriterState::new()),
            epoch: AtomicU32::new(0),
        }
    }

    #[inline]
    pub(crate) fn lock(&self) -> SlotGuard<'_> {
        SlotGuard {
            state: self.state.lock(),
            epoch: &self.epoch,
        }
    }

    /// Loads the slot's line into the cache (a plain load whose miss can overlap others').
    #[inline]
    pub(crate) fn prefetch(&self) {
        // Relaxed: the value is discarded; only the memory access matters.
        std::hint::black_box(self.epoch.load(Ordering::Relaxed));
    }

    /// True when stint `epoch` has certainly ended; false means "look under the lock".
    #[inline]
    pub(crate) fn stint_ended(&self, epoch: u32) -> bool {
        // Acquire pairs with the Release in `end_stint`: a reader that sees the new epoch also
        // sees the state written before it (not needed for the conclusion, which is monotonic).
        self.epoch.load(Ordering::Acquire) != epoch
    }
}

/// A locked slot.
pub(crate) struct SlotGuard<'a> {
    state: MutexGuard<'a, WriterState>,
    epoch: &'a AtomicU32,
}

impl Deref for SlotGuard<'_> {
    type Target = WriterState;
    #[inline]
    fn deref(&self) -> &WriterState {
        &self.state
    }
}

impl DerefMut for SlotGuard<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut WriterState {
        &mut self.state
    }
}

impl SlotGuard<'_> {
    /// The current stint's epoch.
    #[inline]
    pub(crate) fn epoch(&self) -> u32 {
        // Relaxed: the lock we hold orders us after every store (all stores happen under it).
        self.epoch.load(Ordering::Relaxed)
    }

    /// Has this writer flushed a delivery with last offset `offset` made in stint `epoch`?
    #[inline]
    pub(crate) fn covers(&self, epoch: u32, offset: Offset) -> bool {
        self.epoch() != epoch || (self.has(flag::HAS_FLUSHED) && self.flushed >= offset)
    }

    /// Ends the current pending stint: everything delivered in it counts as done.
    #[inline]
    pub(crate) fn end_stint(&mut self) {
        debug_assert_eq!(self.status, Status::Pending);
        // Release: pairs with `Slot::stint_ended`'s Acquire.
        self.epoch
            .store(self.epoch().wrapping_add(1), Ordering::Release);
        self.status = Status::Idle;
        self.set(flag::CHALLENGED | flag::INDEXED, false);
    }
}

/// The segmented, never-moving slot table.
pub(crate) struct Table {
    segments: [AtomicPtr<Slot>; SEGMENTS],
}

/// Segment number and position inside it for a dense index.
#[inline]
fn locate(index: u32) -> (usize, usize) {
    let v = index as u64 / BASE + 1;
    let seg = 63 - v.leading_zeros();
    let start = BASE * ((1u64 << seg) - 1);
    (seg as usize, (index as u64 - start) as usize)
}

#[inline]
fn segment_len(seg: usize) -> usize {
    (BASE as usize) << seg
}

impl Table {
    pub(crate) fn new() -> Self {
        Table {
            segments: std::array::from_fn(|_| AtomicPtr::new(ptr::null_mut())),
        }
    }

    /// The slot at `index`, if its segment exists.
    #[inline]
    pub(crate) fn get(&self, index: u32) -> Option<&Slot> {
        let (seg, pos) = locate(index);
        // Acquire pairs with the Release in `ensure`: seeing the pointer means seeing the
        // initialised slots behind it.
        let base = self.segments[seg].load(Ordering::Acquire);
        if base.is_null() {
            return None;
        }
        // SAFETY: a non-null segment pointer came from `ensure`, which leaked a boxed slice of
        // exactly `segment_len(seg)` initialised slots; `pos < segment_len(seg)` by `locate`.
        // Segments are freed only in `Drop`, which has `&mut self`, so the reference cannot
        // outlive the allocation.
        Some(unsafe { &*base.add(pos) })
    }

    /// Makes sure the slot at `index` exists. Callers serialise on the registry lock, so two
    /// threads never allocate the same segment.
    pub(crate) fn ensure(&self, index: u32) {
        let (seg, _) = locate(index);
        for s in 0..=seg {
            // Relaxed: only the registry-lock holder stores these pointers, and it is us.
            if self.segments[s].load(Ordering::Relaxed).is_null() {
                let slots: Box<[Slot]> = (0..segment_len(s)).map(|_| Slot::new()).collect();
                let raw = Box::into_raw(slots) as *mut Slot;
                // Release: publishes the initialised slots to `get`'s Acquire load.
                self.segments[s].store(raw, Ordering::Release);
            }
        }
    }

    /// Bytes allocated for slots.
    pub(crate) fn allocated_bytes(&self) -> usize {
        (0..SEGMENTS)
            .take_while(|&s| !self.segments[s].load(Ordering::Acquire).is_null())
            .map(|s| segment_len(s) * std::mem::size_of::<Slot>())
            .sum()
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        for seg in 0..SEGMENTS {
            let base = self.segments[seg].load(Ordering::Relaxed);
            if base.is_null() {
                continue;
            }
            let slice = ptr::slice_from_raw_parts_mut(base, segment_len(seg));
            // SAFETY: `base` came from `Box::into_raw` of a boxed slice of this length in
            // `ensure`; `&mut self` means no reference into it is alive; each segment is freed once.
            drop(unsafe { Box::from_raw(slice) });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_is_dense_and_contiguous() {
        let mut expect = (0usize, 0usize);
        for i in 0..(BASE as u32 * 40) {
            let got = locate(i);
            assert_eq!(got, expect, "index {i}");
            expect.1 += 1;
            if expect.1 == segment_len(expect.0) {
                expect = (expect.0 + 1, 0);
            }
        }
        let (seg, pos) = locate(u32::MAX);
        assert!(seg < SEGMENTS && pos < segment_len(seg));
    }

    #[test]
    fn slot_fits_in_a_cache_line() {
        assert!(
            std::mem::size_of::<Slot>() <= 64,
            "{}",
            std::mem::size_of::<Slot>()
        );
    }
}
