//! The buffer's one state word: lifecycle phase, wake-up flags and the reservation positions.
//!
//! ```text
//!  63 62 | 61       | 60               | 59   | 58 ........ 24 | 23 ....... 0
//!  phase | SLEEPING | PRODUCER_WAITING | KICK | byte tail      | message tail
//! ```
//!
//! | field | written by | meaning |
//! | --- | --- | --- |
//! | phase | `begin_stop` (Running → Draining), the finishing stop (Draining → Closed) | admission: only `Running` admits |
//! | SLEEPING | the sink, while parked in `next_batch` or armed by `poll_batch_notify` | producers that reach the sink's wake threshold must wake it |
//! | PRODUCER_WAITING | producers parked in `push_timeout` | whoever frees capacity or changes the phase must wake them |
//! | KICK | `ack`, `nack`, `flush`, `stop` | sink-side state changed since the sink last looked: do not sleep |
//! | byte tail, message tail | producers advance them (one CAS with the phase and capacity check) | positions (modulo 2³⁵ and 2²⁴) of the next reservation: a push's CAS hands it its ring ticket and its arena bytes |
//!
//! The positions are cumulative. The buffer keeps a second word, `released`, with the same two
//! fields: the messages and bytes that reached a terminal state (written only by the sink side,
//! under its mutex). `tail − released` (modulo the field widths) is what is accepted and not
//! yet resolved: the capacity check. Because admission, the reservation and the wake flags
//! share one word, every decision about them is one read-modify-write and all of them are
//! totally ordered (the modification order of the word): a push either precedes the stop's
//! phase change (and is counted, so the drain waits for it) or follows it (and is refused).

/// Bits of the message position.
pub(super) const MSG_BITS: u32 = 24;
/// Mask of the message position (positions are taken modulo 2²⁴).
pub(super) const MSG_MASK: u64 = (1 << MSG_BITS) - 1;
/// Shift of the byte position.
pub(super) const BYTES_SHIFT: u32 = MSG_BITS;
/// Bits of the byte position.
pub(super) const BYTES_BITS: u32 = 35;
/// Mask of the byte position (positions are taken modulo 2³⁵).
pub(super) const BYTES_MASK: u64 = (1 << BYTES_BITS) - 1;
/// Largest representable byte count (32 GiB - 1).
pub(super) const BYTES_MAX: u64 = BYTES_MASK;
const FIELDS: u64 = MSG_MASK | (BYTES_MASK << BYTES_SHIFT);

/// The sink is parked in `next_batch` (or armed) and must be woken (see the module table).
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

/// A decoded value of the state word (or of the `released` word, whose flag bits are zero).
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
    /// The message position (modulo 2²⁴).
    #[inline]
    pub(super) fn messages(self) -> u64 {
        self.0 & MSG_MASK
    }
    /// The byte position (modulo 2³⁵).
    #[inline]
    pub(super) fn bytes(self) -> u64 {
        (self.0 >> BYTES_SHIFT) & BYTES_MASK
    }
    #[inline]
    pub(super) fn has(self, flag: u64) -> bool {
        self.0 & flag != 0
    }
    /// Advances both positions (each modulo its width; the flags and phase are kept).
    #[inline]
    pub(super) fn plus(self, messages: u64, bytes: u64) -> Word {
        let m = (self.messages() + messages) & MSG_MASK;
        let b = (self.bytes().wrapping_add(bytes)) & BYTES_MASK;
        Word((self.0 & !FIELDS) | m | (b << BYTES_SHIFT))
    }
    /// `(messages, bytes)` between `released` and this word's positions: what is accepted and
    /// not yet resolved (the caller keeps both below the field widths).
    #[inline]
    pub(super) fn pending_since(self, released: Word) -> (u64, u64) {
        (
            self.messages().wrapping_sub(released.messages()) & MSG_MASK,
            self.bytes().wrapping_sub(released.bytes()) & BYTES_MASK,
        )
    }
}

/// A wake threshold for a parked sink: target positions of the state word's tails (plus "never"
/// and "not by bytes" bits). Targets lie less than half a field width ahead of the word the
/// sink read when it computed them, so "reached" is a wrapping comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Threshold(pub(super) u64);

impl Threshold {
    const NEVER: u64 = 1 << 63;
    const NOT_BY_BYTES: u64 = 1 << 62;
    /// Byte targets are clamped to this far ahead (waking earlier is harmless: the sink parks
    /// again with a new threshold).
    const BYTES_AHEAD_MAX: u64 = 1 << (BYTES_BITS - 2);
    /// No push can make a batch ready (the sink waits for an ack, a stop or a deadline).
    pub(super) const NEVER_BY_PUSH: Threshold = Threshold(Self::NEVER);

    /// Wake once `messages` more messages are reserved after `base`, or (with `Some`) that many
    /// more bytes.
    pub(super) fn after(base: Word, messages: u64, bytes: Option<u64>) -> Threshold {
        debug_assert!(messages < 1 << (MSG_BITS - 1));
        let m = (base.messages() + messages) & MSG_MASK;
        match bytes {
            Some(b) => {
                let b = base.bytes().wrapping_add(b.min(Self::BYTES_AHEAD_MAX)) & BYTES_MASK;
                Threshold(m | (b << BYTES_SHIFT))
            }
            None => Threshold(m | Self::NOT_BY_BYTES),
        }
    }
    /// True when a word with these positions has reached the threshold.
    #[inline]
    pub(super) fn reached_by(self, word: Word) -> bool {
        if self.0 & Self::NEVER != 0 {
            return false;
        }
        let target = Word(self.0 & FIELDS);
        let m = word.messages().wrapping_sub(target.messages()) & MSG_MASK;
        if m < 1 << (MSG_BITS - 1) {
            return true;
        }
        if self.0 & Self::NOT_BY_BYTES != 0 {
            return false;
        }
        let b = word.bytes().wrapping_sub(target.bytes()) & BYTES_MASK;
        b < 1 << (BYTES_BITS - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_do_not_overlap_and_wrap_alone() {
        let w = Word(0)
            .plus(MSG_MASK, BYTES_MAX)
            .with_phase(Phase::Draining);
        assert_eq!(w.messages(), MSG_MASK);
        assert_eq!(w.bytes(), BYTES_MAX);
        assert_eq!(w.phase(), Phase::Draining);
        assert!(!w.has(SLEEPING) && !w.has(PRODUCER_WAITING) && !w.has(KICK));
        let w = Word(w.0 | SLEEPING | KICK);
        // Both positions wrap to zero without carrying into each other or the flags.
        let wrapped = w.plus(1, 1);
        assert_eq!((wrapped.messages(), wrapped.bytes()), (0, 0));
        assert_eq!(wrapped.0, SLEEPING | KICK | (1 << 62));
        assert_eq!(w.with_phase(Phase::Closed).phase(), Phase::Closed);
        assert!(w.has(SLEEPING) && w.has(KICK) && !w.has(PRODUCER_WAITING));
    }

    #[test]
    fn pending_counts_across_the_wrap() {
        let released = Word(0).plus(MSG_MASK - 2, BYTES_MAX - 10);
        let tail = released.plus(5, 100);
        assert!(tail.messages() < released.messages(), "the tail wrapped");
        assert_eq!(tail.pending_since(released), (5, 100));
        assert_eq!(released.pending_since(released), (0, 0));
    }

    #[test]
    fn threshold_compares_positions_with_wrap() {
        let base = Word(0).plus(MSG_MASK - 1, BYTES_MAX - 50);
        let t = Threshold::after(base, 5, Some(100));
        assert!(!t.reached_by(base.plus(4, 99)));
        assert!(t.reached_by(base.plus(5, 0)));
        assert!(t.reached_by(base.plus(1, 100)));
        assert!(
            !t.reached_by(base),
            "a word behind the target has not reached it"
        );
        let idle = Threshold::after(base, 1, None);
        assert!(
            !idle.reached_by(base.plus(0, 1 << 20)),
            "bytes alone never reach it"
        );
        assert!(idle.reached_by(base.plus(1, 0)));
        assert!(!Threshold::NEVER_BY_PUSH.reached_by(base.plus(MSG_MASK / 4, BYTES_MAX / 4)));
    }
}
