//! The lock-free multi-producer, single-consumer ring that carries accepted messages to the
//! sink: a ring of descriptor slots plus a byte arena for the payloads, both allocated on the
//! first push (an idle buffer holds neither).
//!
//! A push's CAS on the state word (`word.rs`) hands it a message position `t` (its *ticket*)
//! and a byte position `p`: it owns slot `t % slots` and arena bytes `[p, p + len)` (modulo the
//! arena length, so a payload may wrap around the arena's end in two pieces). It copies its
//! bytes into the arena, writes its descriptor (length, offset) into the slot and publishes the
//! slot's stamp:
//!
//! | slot stamp | meaning |
//! | --- | --- |
//! | `2·lap(t)` | free, waiting for the producer of ticket `t` |
//! | `2·lap(t) + 1` | ticket `t`'s message is published, waiting for the consumer |
//!
//! where `lap(t) = (t mod 2²⁴) / slots` (the word's message field is 2²⁴ wide; the slot count
//! is a power of two that divides it, and a zeroed slot is free for the first lap). The
//! consumer (the sink side, holding the only [`Head`]) reads the descriptor of slot `head`,
//! frees the slot for the next lap, and later copies the payload out of the arena when it puts
//! the message in a batch.
//!
//! Why nothing is overwritten too early: a push is admitted only while everything accepted and
//! not yet *released* (terminal: acked, failed, handed back) fits the capacities, and the sink
//! releases a message only after it copied the payload out. So when ticket `t + slots` is
//! admitted, ticket `t` was consumed (its slot is free), and when bytes `[p + arena, …)` are
//! admitted, bytes `[p, …)` were copied out. The stamp wait below is a safety net, not a lock.
//!
//! Memory-ordering edges (docs/MEMORY_ORDERING.md, "batch ring"):
//! - R1: producer `stamp.store(2·lap + 1, Release)` → consumer `stamp.load(Acquire)`: the
//!   descriptor and the arena bytes written before it happen-before the consumer reads them.
//! - R2: consumer `stamp.store(next lap, Release)` → producer `stamp.load(Acquire)` one lap
//!   later: the consumer's read of the descriptor happens-before the next producer's overwrite.
//! - R3: sink `released.store(Release)` (after copying the payloads out) → producer
//!   `released.load(Acquire)` before its CAS: the copy-out of arena bytes happens-before a
//!   later lap's producer overwrites them.
//! - R4: the arena and slots are published by the `parts` CAS (AcqRel) and read with Acquire.
use std::alloc::{self, Layout};
use std::mem::MaybeUninit;

use super::word::MSG_MASK;
use crate::Offset;
use crate::sync::{AtomicPtr, AtomicU64, Backoff, Ordering, UnsafeCell};

/// What a slot carries besides the stamp: the payload's length and the message's offset.
#[derive(Clone, Copy, Debug)]
pub(super) struct Meta {
    pub(super) len: u64,
    pub(super) offset: Option<Offset>,
}

struct Slot {
    stamp: AtomicU64,
    meta: UnsafeCell<MaybeUninit<Meta>>,
}

/// The lazily allocated part: slots and arena.
struct Parts {
    slots: Box<[Slot]>,
    arena: *mut u8,
    arena_len: usize,
    /// Under loom, one tracked cell per arena byte: every write and read of arena bytes also
    /// touches these, so loom checks that edges R1 and R3 order them (the raw bytes themselves
    /// are invisible to it).
    #[cfg(tidemark_loom)]
    shadow: Box<[UnsafeCell<()>]>,
}

impl Parts {
    /// Tells loom about an access to arena bytes `[start, start + len)` (wrapping).
    #[inline]
    fn shadow(&self, start: usize, len: usize, write: bool) {
        #[cfg(tidemark_loom)]
        for i in 0..len {
            let cell = &self.shadow[(start + i) % self.arena_len];
            if write {
                cell.with_mut(|_| ());
            } else {
                cell.with(|_| ());
            }
        }
        #[cfg(not(tidemark_loom))]
        let _ = (start, len, write);
    }
}

impl Drop for Parts {
    fn drop(&mut self) {
        // SAFETY: `arena` was allocated in `Parts::new` with exactly this layout, and `Parts`
        // owns it (nothing else frees it).
        unsafe { alloc::dealloc(self.arena, arena_layout(self.arena_len)) };
    }
}

fn arena_layout(len: usize) -> Layout {
    // A power of two no larger than 2^35 with alignment 64: always a valid layout on 64-bit.
    Layout::from_size_align(len, 64).expect("arena layout")
}

impl Parts {
    /// `None` when the arena cannot be allocated (the push is refused as full).
    fn new(slots: usize, arena_len: usize) -> Option<Box<Parts>> {
        // SAFETY: the layout has a non-zero size (arena_len >= 1).
        let arena = unsafe { alloc::alloc(arena_layout(arena_len)) };
        if arena.is_null() {
            return None;
        }
        let slots = (0..slots)
            .map(|_| Slot {
                stamp: AtomicU64::new(0),
                meta: UnsafeCell::new(MaybeUninit::uninit()),
            })
            .collect();
        Some(Box::new(Parts {
            slots,
            arena,
            arena_len,
            #[cfg(tidemark_loom)]
            shadow: (0..arena_len).map(|_| UnsafeCell::new(())).collect(),
        }))
    }
}

/// The ring (shared by producers and the consumer).
pub(super) struct Ring {
    parts: AtomicPtr<Parts>,
    slots: u64,
    lap_shift: u32,
    arena_len: u64,
}

// SAFETY: a slot's descriptor and a reservation's arena bytes are written only by the producer
// holding that reservation (unique: handed out by one CAS) while the slot is free and the bytes
// are released, and read only by the single consumer (the holder of the one `Head`, or the sink
// side under its mutex) after publication; edges R1-R3 order them. The contents are plain
// bytes and `Copy` descriptors.
unsafe impl Sync for Ring {}
// SAFETY: the ring owns its allocation; moving it to another thread moves it.
unsafe impl Send for Ring {}

/// The consumer's position. Exactly one exists per ring (created with it), so `take` has one
/// caller at a time (it needs `&mut Head`).
pub(super) struct Head {
    /// Messages taken so far (not wrapped).
    pos: u64,
}

impl Head {
    /// The ticket of the next message `take` returns (not wrapped).
    pub(super) fn position(&self) -> u64 {
        self.pos
    }
}

impl Ring {
    /// A ring with at least `capacity_messages` slots (a power of two, at least 2 so a free and
    /// a published stamp differ) and an arena of at least `capacity_bytes` (a power of two),
    /// both allocated on first use; and its one consumer head.
    pub(super) fn new(capacity_messages: usize, capacity_bytes: u64) -> (Ring, Head) {
        let slots = capacity_messages.max(2).next_power_of_two() as u64;
        debug_assert!(slots <= MSG_MASK + 1);
        let ring = Ring {
            parts: AtomicPtr::new(std::ptr::null_mut()),
            slots,
            lap_shift: slots.trailing_zeros(),
            arena_len: capacity_bytes.max(1).next_power_of_two(),
        };
        (ring, Head { pos: 0 })
    }

    /// True once the slots and the arena exist (the first push allocates them).
    fn is_allocated(&self) -> bool {
        // Relaxed: a gauge.
        !self.parts.load(Ordering::Relaxed).is_null()
    }

    /// Bytes the slots and arena take once allocated.
    pub(super) fn allocated_bytes(&self) -> u64 {
        if self.is_allocated() {
            self.slots * std::mem::size_of::<Slot>() as u64 + self.arena_len
        } else {
            0
        }
    }

    fn parts(&self) -> Option<&Parts> {
        // Acquire: pairs with the publishing CAS in `ready` (the slots' initial state and the
        // arena allocation happen-before our use).
        let p = self.parts.load(Ordering::Acquire);
        // SAFETY: a non-null pointer came from `Box::into_raw` in `ready` and is freed only by
        // `Drop for Ring`, which has exclusive access.
        (!p.is_null()).then(|| unsafe { &*p })
    }

    /// Allocates the slots and arena if this is the first push. False when the allocation
    /// failed (nothing was reserved yet: the caller refuses the push as full).
    #[inline]
    pub(super) fn ready(&self) -> bool {
        if self.parts().is_some() {
            return true;
        }
        self.allocate()
    }

    #[cold]
    fn allocate(&self) -> bool {
        let Some(mine) = Parts::new(self.slots as usize, self.arena_len as usize) else {
            return false;
        };
        let mine = Box::into_raw(mine);
        // AcqRel: Release publishes our initialised parts; Acquire (on failure, via the load
        // in `parts`) sees a winner's.
        match self.parts.compare_exchange(
            std::ptr::null_mut(),
            mine,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => {}
            Err(_) => {
                // SAFETY: `mine` came from `Box::into_raw` above and was never shared.
                drop(unsafe { Box::from_raw(mine) });
            }
        }
        true
    }

    #[inline]
    fn lap_stamp(&self, ticket: u64) -> u64 {
        ((ticket & MSG_MASK) >> self.lap_shift) << 1
    }

    /// Writes a reservation's payload and descriptor and publishes it to the consumer.
    /// `ticket` and `byte_pos` are the positions the reservation's CAS handed out.
    ///
    /// # Safety
    /// The caller holds the reservation `(ticket, byte_pos, payload.len())` from the state word
    /// (admitted within the capacities, so the slot and bytes are free) and called `ready()`
    /// before reserving.
    #[inline]
    pub(super) unsafe fn publish(&self, ticket: u64, byte_pos: u64, payload: &[u8], meta: Meta) {
        let Some(parts) = self.parts() else {
            unreachable!("a reservation is taken only after the ring is allocated");
        };
        let mask = self.arena_len - 1;
        let start = (byte_pos & mask) as usize;
        let first = payload.len().min(parts.arena_len - start);
        parts.shadow(start, payload.len(), true);
        // SAFETY: the reserved range `[start, start + len)` (wrapping once at the end) lies in
        // the arena, and no other thread reads or writes it: it is reserved for us and released
        // by its previous user (edge R3).
        unsafe {
            std::ptr::copy_nonoverlapping(payload.as_ptr(), parts.arena.add(start), first);
            std::ptr::copy_nonoverlapping(
                payload.as_ptr().add(first),
                parts.arena,
                payload.len() - first,
            );
        }
        let slot = &parts.slots[(ticket & (self.slots - 1)) as usize];
        let free = self.lap_stamp(ticket);
        // Acquire: edge R2 (the consumer's read of the previous lap's descriptor happens-before
        // our write). Admission guarantees the slot is already free; the loop is a safety net.
        let mut backoff = Backoff::new();
        while slot.stamp.load(Ordering::Acquire) != free {
            backoff.snooze();
        }
        slot.meta.with_mut(|p| {
            // SAFETY: the stamp says "free for this ticket", and tickets are unique, so no other
            // thread reads or writes the descriptor until we publish below.
            unsafe { (*p).write(meta) };
        });
        // Release: edge R1 (the bytes and descriptor happen-before the consumer's reads).
        slot.stamp.store(free + 1, Ordering::Release);
    }

    /// Takes the next message's descriptor if it is published, and frees its slot. Its bytes
    /// stay in the arena until the sink releases the message.
    #[inline]
    pub(super) fn take(&self, head: &mut Head) -> Option<Meta> {
        let parts = self.parts()?;
        let pos = head.pos;
        let slot = &parts.slots[(pos & (self.slots - 1)) as usize];
        let stamp = self.lap_stamp(pos);
        // Acquire: edge R1 (the producer's writes happen-before our reads).
        if slot.stamp.load(Ordering::Acquire) != stamp + 1 {
            return None;
        }
        let meta = slot.meta.with(|p| {
            // SAFETY: the published stamp means the descriptor is initialised; we hold the only
            // head, and no producer writes the slot until we free it below.
            unsafe { (*p).assume_init_read() }
        });
        // Release: edge R2 (our read happens-before the next lap's producer overwrites).
        slot.stamp
            .store(self.lap_stamp(pos + self.slots), Ordering::Release);
        head.pos = pos + 1;
        Some(meta)
    }

    /// The payload of a taken message as up to two pieces (it may wrap at the arena's end).
    ///
    /// # Safety
    /// `[byte_pos, byte_pos + len)` belongs to a message taken from this ring and not yet
    /// released (so no producer can be writing it), and the caller is the sink side (holding
    /// its mutex).
    pub(super) unsafe fn bytes(&self, byte_pos: u64, len: u64) -> (&[u8], &[u8]) {
        let Some(parts) = self.parts() else {
            unreachable!("a message was taken, so the ring is allocated");
        };
        let start = (byte_pos & (self.arena_len - 1)) as usize;
        let len = len as usize;
        let first = len.min(parts.arena_len - start);
        parts.shadow(start, len, false);
        // SAFETY: as for `publish`: in bounds, and stable while the message is unreleased;
        // edge R1 made the producer's writes visible when the message was taken.
        unsafe {
            (
                std::slice::from_raw_parts(parts.arena.add(start), first),
                std::slice::from_raw_parts(parts.arena, len - first),
            )
        }
    }

    /// The unwrapped position of the message tail `word_tail` (a 24-bit position from the
    /// state word), given the consumer's unwrapped head (the tail is at most 2²⁴ ahead).
    pub(super) fn unwrap_tail(head: &Head, word_tail: u64) -> u64 {
        head.pos + (word_tail.wrapping_sub(head.pos) & MSG_MASK)
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // Relaxed: `&mut self` orders every earlier access before this one.
        let p = self.parts.load(Ordering::Relaxed);
        if !p.is_null() {
            // SAFETY: `p` came from `Box::into_raw` in `allocate` and is dropped only here.
            drop(unsafe { Box::from_raw(p) });
        }
    }
}

#[cfg(all(test, not(tidemark_loom)))]
mod tests {
    use super::*;

    fn push(ring: &Ring, t: u64, p: u64, bytes: &[u8]) {
        assert!(ring.ready());
        let meta = Meta {
            len: bytes.len() as u64,
            offset: None,
        };
        // SAFETY: single-threaded test; positions handed out in order like the word does.
        unsafe { ring.publish(t, p, bytes, meta) };
    }

    fn read(ring: &Ring, p: u64, len: u64) -> Vec<u8> {
        // SAFETY: the message was taken and is not released (single-threaded test).
        let (a, b) = unsafe { ring.bytes(p, len) };
        [a, b].concat()
    }

    #[test]
    fn fifo_across_laps_with_payloads_wrapping_the_arena() {
        let (ring, mut head) = Ring::new(3, 10); // 4 slots, 16 arena bytes
        assert!(!ring.is_allocated());
        let (mut t, mut p) = (0u64, 0u64);
        for lap in 0..7u8 {
            let msgs: Vec<Vec<u8>> = (0..3).map(|k| vec![lap * 3 + k; 1 + k as usize]).collect();
            let mut at = Vec::new();
            for m in &msgs {
                push(&ring, t, p, m);
                at.push(p);
                t += 1;
                p += m.len() as u64;
            }
            for (m, &pos) in msgs.iter().zip(&at) {
                let meta = ring.take(&mut head).expect("published");
                assert_eq!(meta.len, m.len() as u64);
                assert_eq!(&read(&ring, pos, meta.len), m, "lap {lap}");
            }
            assert!(ring.take(&mut head).is_none());
        }
        assert!(p > 16, "the arena wrapped");
    }

    #[test]
    fn nothing_is_allocated_before_the_first_push() {
        let (ring, mut head) = Ring::new(16, 1 << 20);
        assert_eq!(ring.allocated_bytes(), 0);
        assert!(ring.take(&mut head).is_none());
        push(&ring, 0, 0, b"x");
        assert!(ring.allocated_bytes() >= 1 << 20);
    }

    #[test]
    fn unwrap_tail_follows_the_head_across_the_wrap() {
        let head = Head { pos: MSG_MASK - 1 };
        assert_eq!(Ring::unwrap_tail(&head, MSG_MASK), MSG_MASK);
        assert_eq!(Ring::unwrap_tail(&head, 2), MSG_MASK + 3);
    }
}
