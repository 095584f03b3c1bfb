//! The buffer's one state word: lifecycle phase, wake-up flags and the capacity reservation.
//!
//! ```text
//!  63 62 | 61       | 60               | 59   | 58 ........ 24 | 23 ....... 0
//!  phase | SLEEPING | PRODUCER_WAITING | KICK | reserved bytes | reserved messages
//! ```
//!
//! | field | written by | meaning |
//! | --- | --- | --- |
//! | phase | `begin_stop` (Running → Draining), the finishing stop (Draining → Closed) | admission: only `Running` admits |
//! | SLEEPING | the sink, while parked in `next_batch` | producers that reach the sink's wake threshold must wake it |
//! | PRODUCER_WAITING | producers parked in `push_timeout` | whoever frees capacity or changes the phase must wake them |
//! | KICK | `ack`, `nack`, `flush`, `stop` | sink-side state changed since the sink last looked: do not sleep |
//! | bytes, messages | producers add (one CAS with the phase check); the sink subtracts at a terminal state | every accepted message that is not yet delivered, failed or handed back |
//!
//! Because admission, capacity and the wake flags share one word, every decision about them is
//! one read-modify-write and all of them are totally ordered (the modification order of the
//! word): a push either precedes the stop's phase change (and is counted, so the drain waits for
//! it) or follows it (and is refused).

/// Bits of the message count.
pub(super) const MSG_BITS: u32 = 24;
/// Largest representable message count.
pub(super) const MSG_MAX: u64 = (1 << MSG_BITS) - 1;
/// Shift of the byte count.
pub(super) const BYTES_SHIFT: u32 = MSG_BITS;
/// Bits of the byte count.
pub(super) const BYTES_BITS: u32 = 35;
/// Largest representable byte count (32 GiB - 1).
pub(super) const BYTES_MAX: u64 = (1 << BYTES_BITS) - 1;

/// The sink is parked in `next_batch` and must be woken (see the module table).
pub(super) const SLEEPING: u64 = 1 << 61;
/// At least one producer is parked in `push_timeout`.
pub(super) const PRODUCER_WAITING: u64 = 1 << 60;
/// Sink-side state changed; a sink about to park must look again.
pub(super) const KICK: u64 = 1 << 59;

const PHASE_SHIFT: u32 = 62;
const PHASE_MASK: u64 = 0b11 << PHASE_SHIFT;

/// Lifecycle phase (docs/CONTRACT.md §5: `Running → Draining(deadline) → Closed(report)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Admitting pushes.
    Running = 0,
    /// Admission closed; everything queued is emitted at once; waiting for acks or the deadline.
    Draining = 1,
    /// The stop report exists; nothing is held any more.
    Closed = 2,
}

/// A decoded value of the state word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Word(pub(super) u64);

impl Word {
    #[inline]
    pub(super) fn phase(self) -> Phase {
        match (self.0 & PHASE_MASK) >> PHASE_SHIFT {
            0 => Phase::Running,
            1 => Phase::Draining,
            _ => Phase::Closed,
        }
    }
    #[inline]
    pub(super) fn with_phase(self, phase: Phase) -> Word {
        Word((self.0 & !PHASE_MASK) | ((phase as u64) << PHASE_SHIFT))
    }
    #[inline]
    pub(super) fn messages(self) -> u64 {
        self.0 & MSG_MAX
    }
    #[inline]
    pub(super) fn bytes(self) -> u64 {
        (self.0 >> BYTES_SHIFT) & BYTES_MAX
    }
    #[inline]
    pub(super) fn has(self, flag: u64) -> bool {
        self.0 & flag != 0
    }
    /// Adds `messages` and `bytes`; the caller has checked they fit the capacity (which the
    /// configuration keeps below the field maxima).
    #[inline]
    pub(super) fn plus(self, messages: u64, bytes: u64) -> Word {
        debug_assert!(self.messages() + messages <= MSG_MAX);
        debug_assert!(self.bytes() + bytes <= BYTES_MAX);
        Word(self.0 + messages + (bytes << BYTES_SHIFT))
    }
    /// Subtracts counts the word holds.
    #[inline]
    pub(super) fn minus(self, messages: u64, bytes: u64) -> Word {
        assert!(
            self.messages() >= messages && self.bytes() >= bytes,
            "batch buffer accounting underflow"
        );
        Word(self.0 - messages - (bytes << BYTES_SHIFT))
    }
}

/// A wake threshold for a parked sink, packed like the counts of [`Word`] (plus a "never" bit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Threshold(pub(super) u64);

impl Threshold {
    const NEVER: u64 = 1 << 63;
    /// No push can make a batch ready (the sink waits for an ack, a stop or a deadline).
    pub(super) const NEVER_BY_PUSH: Threshold = Threshold(Self::NEVER);

    /// Wake when the word holds at least `messages` messages or `bytes` bytes (both clamped).
    pub(super) fn at(messages: u64, bytes: u64) -> Threshold {
        Threshold(messages.min(MSG_MAX + 1) | (bytes.min(BYTES_MAX + 1) << (BYTES_SHIFT + 1)))
    }
    /// True when a word with these counts has reached the threshold.
    #[inline]
    pub(super) fn reached_by(self, word: Word) -> bool {
        if self.0 & Self::NEVER != 0 {
            return false;
        }
        let messages = self.0 & ((1 << (MSG_BITS + 1)) - 1);
        let bytes = (self.0 >> (BYTES_SHIFT + 1)) & ((1 << (BYTES_BITS + 1)) - 1);
        word.messages() >= messages || word.bytes() >= bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_do_not_overlap() {
        let w = Word(0).plus(MSG_MAX, BYTES_MAX).with_phase(Phase::Draining);
        assert_eq!(w.messages(), MSG_MAX);
        assert_eq!(w.bytes(), BYTES_MAX);
        assert_eq!(w.phase(), Phase::Draining);
        assert!(!w.has(SLEEPING) && !w.has(PRODUCER_WAITING) && !w.has(KICK));
        let w = Word(w.0 | SLEEPING | KICK);
        let empty = w.minus(MSG_MAX, BYTES_MAX);
        assert_eq!((empty.messages(), empty.bytes()), (0, 0));
        assert_eq!(empty.0, SLEEPING | KICK | (1 << 62));
        assert_eq!(w.with_phase(Phase::Closed).phase(), Phase::Closed);
        assert!(w.has(SLEEPING) && w.has(KICK) && !w.has(PRODUCER_WAITING));
    }

    #[test]
    fn threshold_compares_both_counts() {
        let t = Threshold::at(5, 100);
        assert!(!t.reached_by(Word(0).plus(4, 99)));
        assert!(t.reached_by(Word(0).plus(5, 0)));
        assert!(t.reached_by(Word(0).plus(1, 100)));
        assert!(!Threshold::NEVER_BY_PUSH.reached_by(Word(0).plus(MSG_MAX, BYTES_MAX)));
        // Clamped thresholds beyond the field maxima are never reached.
        assert!(!Threshold::at(u64::MAX, u64::MAX).reached_by(Word(0).plus(MSG_MAX, BYTES_MAX)));
    }
}
