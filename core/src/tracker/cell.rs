//! Writer cells: what every *registered* writer costs, 16 bytes.
//!
//! A cell holds two words. `meta` says who holds the slot and in which state (generation,
//! free / registered / evicted, the eviction reason, and the writer-level flags `PAUSED` and
//! `ORPHANED`); `bind` names the pending entry ([`super::entry`]) of the writer's latest stint
//! as `(entry index, stint tag)`. A binding is only a hint: it stays behind after the stint
//! ends, and the entry may meanwhile serve another writer. Whoever follows it checks that the
//! entry still carries that tag, is live, and names this writer as its owner.
//!
//! | word | written by | how |
//! | --- | --- | --- |
//! | `meta` | register (registry lock), unregister, evictions, pause / resume / teardown | store under the registry lock for a free cell; CAS otherwise |
//! | `bind` | the committer only | `Release` store after the entry is initialised |
//!
//! The all-zero cell is a free slot of generation 1, so the table is allocated zeroed.

use super::types::{EvictReason, TrackerError, WriterId};
use crate::sync::{AtomicU64, Zeroable};

/// One registered writer's cell.
#[derive(Default)]
pub(super) struct Cell {
    /// A [`Meta`] word.
    pub(super) meta: AtomicU64,
    /// A [`Bind`] word.
    pub(super) bind: AtomicU64,
}

// SAFETY: two atomic integers; zero is valid and equals `Default`.
unsafe impl Zeroable for Cell {}

/// Slot status in [`Meta`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Status {
    Free,
    Registered,
    Evicted,
}

const STATUS_SHIFT: u32 = 32;
const REASON_SHIFT: u32 = 34;
const PAUSED: u64 = 1 << 36;
const ORPHANED: u64 = 1 << 37;

/// A decoded `meta` word: generation (stored as `generation − 1`, so zero is generation 1),
/// status, eviction reason and writer-level flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Meta(pub(super) u64);

impl Meta {
    /// A freshly registered writer of `generation`, no flags.
    pub(super) fn registered(generation: u32) -> Meta {
        Meta(generation.wrapping_sub(1) as u64 | (1 << STATUS_SHIFT))
    }

    /// A free slot whose next writer gets `generation`.
    pub(super) fn free(generation: u32) -> Meta {
        Meta(generation.wrapping_sub(1) as u64)
    }

    #[inline]
    pub(super) fn generation(self) -> u32 {
        (self.0 as u32).wrapping_add(1)
    }

    #[inline]
    pub(super) fn status(self) -> Status {
        match (self.0 >> STATUS_SHIFT) & 3 {
            0 => Status::Free,
            1 => Status::Registered,
            _ => Status::Evicted,
        }
    }

    pub(super) fn reason(self) -> Option<EvictReason> {
        EvictReason::from_u8(((self.0 >> REASON_SHIFT) & 3) as u8)
    }

    #[inline]
    pub(super) fn paused(self) -> bool {
        self.0 & PAUSED != 0
    }

    #[inline]
    pub(super) fn orphaned(self) -> bool {
        self.0 & ORPHANED != 0
    }

    pub(super) fn with_paused(self, on: bool) -> Meta {
        Meta(if on {
            self.0 | PAUSED
        } else {
            self.0 & !PAUSED
        })
    }

    pub(super) fn with_orphaned(self, on: bool) -> Meta {
        Meta(if on {
            self.0 | ORPHANED
        } else {
            self.0 & !ORPHANED
        })
    }

    /// The same generation, evicted for `reason`, flags cleared.
    pub(super) fn evicted(self, reason: EvictReason) -> Meta {
        Meta(
            (self.0 & 0xFFFF_FFFF)
                | (2 << STATUS_SHIFT)
                | ((reason.to_u8() as u64) << REASON_SHIFT),
        )
    }

    /// Is `writer` the writer holding this slot (any status but free)?
    #[inline]
    pub(super) fn holds(self, writer: WriterId) -> bool {
        self.generation() == writer.generation() && self.status() != Status::Free
    }

    /// Rejects stale, unknown and evicted ids.
    #[inline]
    pub(super) fn check(self, writer: WriterId) -> Result<(), TrackerError> {
        if !self.holds(writer) {
            Err(TrackerError::UnknownWriter(writer))
        } else if self.status() == Status::Evicted {
            Err(TrackerError::EvictedWriter(writer))
        } else {
            Ok(())
        }
    }
}

/// A decoded `bind` word: entry index (low 32 bits) and stint tag (24 bits above). Tag 0 means
/// "never bound" (stints start at tag 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Bind {
    pub(super) entry: u32,
    pub(super) tag: u32,
}

impl Bind {
    #[inline]
    pub(super) fn decode(word: u64) -> Option<Bind> {
        let tag = (word >> 32) as u32;
        (tag != 0).then_some(Bind {
            entry: word as u32,
            tag,
        })
    }

    #[inline]
    pub(super) fn encode(self) -> u64 {
        ((self.tag as u64) << 32) | self.entry as u64
    }
}

#[cfg(all(test, not(tidemark_loom)))]
mod tests {
    use super::*;

    #[test]
    fn zero_is_a_free_slot_of_generation_one() {
        let m = Meta(0);
        assert_eq!((m.generation(), m.status()), (1, Status::Free));
        assert_eq!(Bind::decode(0), None);
        assert_eq!(std::mem::size_of::<Cell>(), 16);
    }

    #[test]
    fn meta_round_trips() {
        for generation in [1, 2, u32::MAX, 0] {
            let m = Meta::registered(generation);
            assert_eq!(m.generation(), generation);
            assert_eq!(m.status(), Status::Registered);
            let p = m.with_paused(true).with_orphaned(true);
            assert!(p.paused() && p.orphaned());
            let e = p.evicted(EvictReason::Stalled);
            assert_eq!(e.status(), Status::Evicted);
            assert_eq!(e.reason(), Some(EvictReason::Stalled));
            assert!(!e.paused() && !e.orphaned());
            assert_eq!(e.generation(), generation);
            assert_eq!(Meta::free(generation).generation(), generation);
        }
        let b = Bind {
            entry: 7,
            tag: 0xAB_CDEF,
        };
        assert_eq!(Bind::decode(b.encode()), Some(b));
    }
}
