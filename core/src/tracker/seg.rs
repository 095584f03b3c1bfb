//! A segmented table that grows without ever moving an element.
//!
//! Segments double in size (`base`, `2·base`, `4·base`, …), so a reference to an element stays
//! valid for the table's lifetime and lookups need no lock: one `Acquire` load of the segment
//! pointer plus index arithmetic. Segments are allocated zeroed (O(1) for large ones: the OS
//! maps zero pages lazily) by one thread at a time (the caller serialises `ensure`), published
//! with a `Release` store, and freed only on drop. No element is ever freed while the table
//! lives, so no reclamation scheme is needed.

use crate::sync::{AtomicPtr, Ordering, Zeroable, alloc_zeroed_slice, free_zeroed_slice};

/// Enough segments to address every `u32` index for any `base >= 1`.
const SEGMENTS: usize = 33;

/// The segmented table of `T`; the first segment holds `1 << SHIFT` elements.
pub(super) struct Segmented<T: Zeroable, const SHIFT: u32> {
    segments: [AtomicPtr<T>; SEGMENTS],
}

// SAFETY: the table hands out `&T` to any thread; `T: Sync` makes that sound, and the segment
// pointers are only written under the caller's serialisation of `ensure`.
unsafe impl<T: Zeroable + Sync, const SHIFT: u32> Sync for Segmented<T, SHIFT> {}
// SAFETY: the table owns its elements; moving it moves them (`T: Send`).
unsafe impl<T: Zeroable + Send, const SHIFT: u32> Send for Segmented<T, SHIFT> {}

/// The allocation failed: `bytes` could not be had.
#[derive(Clone, Copy, Debug)]
pub(super) struct AllocFailed {
    pub(super) bytes: usize,
}

impl<T: Zeroable, const SHIFT: u32> Segmented<T, SHIFT> {
    /// An empty table.
    pub(super) fn new() -> Self {
        Segmented {
            segments: std::array::from_fn(|_| AtomicPtr::new(std::ptr::null_mut())),
        }
    }

    /// Segment number and position inside it for a dense index.
    #[inline(always)]
    fn locate(&self, index: u32) -> (usize, usize) {
        let v = (index as u64 >> SHIFT) + 1;
        let seg = 63 - v.leading_zeros();
        let start = ((1u64 << seg) - 1) << SHIFT;
        (seg as usize, (index as u64 - start) as usize)
    }

    #[inline]
    fn segment_len(&self, seg: usize) -> usize {
        1usize << (SHIFT as usize + seg)
    }

    /// The element at `index`, if its segment exists.
    #[inline(always)]
    pub(super) fn get(&self, index: u32) -> Option<&T> {
        let (seg, pos) = self.locate(index);
        // Acquire pairs with the Release in `ensure`: seeing the pointer means seeing the
        // initialised (zeroed) elements behind it.
        let base = self.segments[seg].load(Ordering::Acquire);
        if base.is_null() {
            return None;
        }
        // SAFETY: a non-null segment pointer came from `ensure`, which allocated exactly
        // `segment_len(seg)` valid elements; `pos < segment_len(seg)` by `locate`. Segments are
        // freed only in `Drop` (`&mut self`), so the reference cannot outlive the allocation.
        Some(unsafe { &*base.add(pos) })
    }

    /// Makes sure the element at `index` exists. Callers serialise calls (the registry lock for
    /// writer cells, the commit lock for pending entries), so two threads never allocate the
    /// same segment. On failure nothing changes.
    pub(super) fn ensure(&self, index: u32) -> Result<(), AllocFailed> {
        let (seg, _) = self.locate(index);
        for s in 0..=seg {
            // Relaxed: only the serialised caller stores these pointers, and it is us.
            if self.segments[s].load(Ordering::Relaxed).is_null() {
                let len = self.segment_len(s);
                let raw = alloc_zeroed_slice::<T>(len).ok_or(AllocFailed {
                    bytes: len.saturating_mul(std::mem::size_of::<T>()),
                })?;
                // Release: publishes the initialised elements to `get`'s Acquire load.
                self.segments[s].store(raw, Ordering::Release);
            }
        }
        Ok(())
    }

    /// Elements allocated (the sum of the allocated segments' lengths).
    pub(super) fn capacity(&self) -> usize {
        (0..SEGMENTS)
            // Relaxed: a size estimate; segments are only ever added.
            .take_while(|&s| !self.segments[s].load(Ordering::Relaxed).is_null())
            .map(|s| self.segment_len(s))
            .sum()
    }

    /// Bytes allocated for elements.
    pub(super) fn allocated_bytes(&self) -> usize {
        self.capacity() * std::mem::size_of::<T>()
    }
}

impl<T: Zeroable, const SHIFT: u32> Drop for Segmented<T, SHIFT> {
    fn drop(&mut self) {
        for seg in 0..SEGMENTS {
            let base = self.segments[seg].load(Ordering::Relaxed);
            if base.is_null() {
                continue;
            }
            // SAFETY: `base` came from `alloc_zeroed_slice` with this length in `ensure`;
            // `&mut self` means no reference into it is alive; each segment is freed once.
            unsafe { free_zeroed_slice(base, self.segment_len(seg)) };
        }
    }
}

#[cfg(all(test, not(tidemark_loom)))]
mod tests {
    use super::*;
    use crate::sync::AtomicU64;

    #[test]
    fn locate_is_dense_and_contiguous() {
        fn check<const S: u32>() {
            let t = Segmented::<AtomicU64, S>::new();
            let mut expect = (0usize, 0usize);
            for i in 0..((1u32 << S) * 40) {
                assert_eq!(t.locate(i), expect, "index {i} shift {S}");
                expect.1 += 1;
                if expect.1 == t.segment_len(expect.0) {
                    expect = (expect.0 + 1, 0);
                }
            }
            let (seg, pos) = t.locate(u32::MAX);
            assert!(seg < SEGMENTS && pos < t.segment_len(seg));
        }
        check::<0>();
        check::<1>();
        check::<6>();
        check::<10>();
    }

    #[test]
    fn elements_start_zeroed_and_stay_put() {
        let t = Segmented::<AtomicU64, 2>::new();
        assert!(t.get(0).is_none());
        t.ensure(9).unwrap();
        let p = t.get(9).unwrap() as *const AtomicU64;
        assert_eq!(t.get(9).unwrap().load(Ordering::Relaxed), 0);
        t.get(9).unwrap().store(7, Ordering::Relaxed);
        t.ensure(1000).unwrap();
        assert_eq!(
            t.get(9).unwrap() as *const AtomicU64,
            p,
            "growth moved an element"
        );
        assert_eq!(t.get(9).unwrap().load(Ordering::Relaxed), 7);
        assert!(t.capacity() > 1000);
    }
}
