//! Pending entries: one per *pending* writer (a "stint": from the delivery that made the writer
//! pending to the flush, removal or eviction that ended it), in a dense table whose size
//! follows the peak number of pending writers, not the number registered.
//!
//! # The state word
//!
//! Every decision about a stint is one CAS on its entry's `state` word:
//!
//! | bits | field | meaning |
//! | --- | --- | --- |
//! | 0 | `LIVE` | the stint is pending |
//! | 1 | `MUT` | a non-committer mutation (partial flush, touch, pause, resume, teardown) is writing the entry's plain fields |
//! | 2 | `HEAD` | the drainer parked on a delivery of this stint (see `drain.rs`) |
//! | 3 | `CHALLENGED` | a sweep challenged the writer, unanswered |
//! | 4 | `INDEXED` | the sweep index holds an entry for this stint |
//! | 5 | `HAS_FLUSHED` | `flushed_*` hold a report of this stint |
//! | 6 | `EVICTING` | the stint was ended by an eviction whose cell update is still under way |
//! | 7–8 | reason | the eviction reason while `EVICTING` |
//! | 9 | `RESERVED` | (not `LIVE`) the committer set the entry aside for its next new stint |
//! | 10–39 | `ver` | bumped by every change of a live stint; its parity picks the `sent` buffer |
//! | 40–63 | `tag` | the stint's number on this entry (1, 2, …; 0 = never used) |
//!
//! Transitions (all CAS from the value the actor read, so an actor holding an old snapshot
//! fails and re-reads):
//!
//! - **start** (committer, entry not `LIVE`): fields written, then `state = tag+1 | LIVE |
//!   INDEXED` with a `Release` store. Nobody else writes a word without `LIVE`.
//! - **extend** (committer): writes the new `last_sent` into buffer `(ver+1) & 1`, then CAS
//!   `ver += 1`. A concurrent reader of the old version reads the other buffer, which is only
//!   rewritten after `ver` has moved on, so its own CAS then fails.
//! - **complete** (flush with `offset >= last_sent`): CAS to ended (`LIVE` and every flag
//!   clear). Needs `MUT` clear.
//! - **mutate** (partial flush, touch, pause, resume, teardown): CAS set `MUT`; write plain
//!   fields; CAS clear `MUT`, `ver += 2` (parity kept) plus the flag changes. The committer's
//!   extend CAS carries `MUT` along, so the committer never waits for it.
//! - **end** (remove, cleanup, unregister, eviction): CAS to ended, with `EVICTING` and a reason
//!   for an eviction. Needs `MUT` clear.
//! - **challenge** (sweep): CAS set `CHALLENGED`. **park** (drainer): CAS set `HEAD`.
//!
//! Any transition that may make a delivery done (complete, partial flush, end) also clears
//! `HEAD`; the actor that cleared it asks for a drain. `ver` wraps after 2³⁰ changes of one
//! stint: an actor would have to stall between its read and its CAS while that many happen.

use crate::Offset;
use crate::sync::{AtomicU64, Backoff, Ordering, Zeroable};

pub(super) const LIVE: u64 = 1 << 0;
pub(super) const MUT: u64 = 1 << 1;
pub(super) const HEAD: u64 = 1 << 2;
pub(super) const CHALLENGED: u64 = 1 << 3;
pub(super) const INDEXED: u64 = 1 << 4;
pub(super) const HAS_FLUSHED: u64 = 1 << 5;
pub(super) const EVICTING: u64 = 1 << 6;
/// Set by the committer on an entry that is not `LIVE` when it reserves it for a new stint
/// (nobody else writes a word without `LIVE`).
pub(super) const RESERVED: u64 = 1 << 9;
const REASON_SHIFT: u32 = 7;
const VER_SHIFT: u32 = 10;
const VER_MASK: u64 = (1 << 30) - 1;
const TAG_SHIFT: u32 = 40;
const TAG_MASK: u64 = (1 << 24) - 1;
const FLAGS: u64 = (1 << VER_SHIFT) - 1;

/// A decoded state word (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct State(pub(super) u64);

impl State {
    #[inline]
    pub(super) fn tag(self) -> u32 {
        ((self.0 >> TAG_SHIFT) & TAG_MASK) as u32
    }
    #[inline]
    pub(super) fn ver(self) -> u64 {
        (self.0 >> VER_SHIFT) & VER_MASK
    }
    #[inline]
    pub(super) fn has(self, flag: u64) -> bool {
        self.0 & flag != 0
    }
    #[inline]
    pub(super) fn live(self) -> bool {
        self.has(LIVE)
    }
    /// Live and carrying `tag`: the stint a delivery or binding names is still pending.
    #[inline]
    pub(super) fn is_stint(self, tag: u32) -> bool {
        self.live() && self.tag() == tag
    }
    /// The eviction reason code while `EVICTING`.
    pub(super) fn evict_reason(self) -> u8 {
        ((self.0 >> REASON_SHIFT) & 3) as u8
    }
    #[inline]
    fn with_ver(self, ver: u64) -> State {
        State((self.0 & !(VER_MASK << VER_SHIFT)) | ((ver & VER_MASK) << VER_SHIFT))
    }
    #[inline]
    pub(super) fn with(self, set: u64, clear: u64) -> State {
        State((self.0 | set) & !clear)
    }
    /// This stint, ended (every flag cleared), optionally marked as an eviction in progress.
    #[inline]
    pub(super) fn ended(self, evicting: Option<u8>) -> State {
        let base = self.0 & !FLAGS;
        State(match evicting {
            Some(r) => base | EVICTING | ((r as u64 & 3) << REASON_SHIFT),
            None => base,
        })
    }
    /// The first state of the next stint on this entry: tag + 1 (skipping 0), live, indexed.
    pub(super) fn next_stint(self) -> State {
        let mut tag = (self.tag() as u64 + 1) & TAG_MASK;
        if tag == 0 {
            tag = 1;
        }
        State((tag << TAG_SHIFT) | LIVE | INDEXED)
    }
}

/// One pending stint's shared state: exactly one 64-byte cache line.
#[derive(Default)]
#[repr(align(64))]
pub(super) struct Entry {
    pub(super) state: AtomicU64,
    /// The raw [`WriterId`](super::WriterId) of the stint's writer. Written by the committer
    /// before the `Release` store that starts the stint.
    pub(super) owner: AtomicU64,
    /// `last_sent` double-buffered: `[tx0, op0, tx1, op1]`, buffer `ver & 1` is current.
    sent: [AtomicU64; 4],
    /// The highest report of this stint (when `HAS_FLUSHED`). Written only by the `MUT` holder:
    /// `op` first, then `tx` with `Release`; read `tx` (`Acquire`) then `op`. The value is
    /// monotonic, so a reader that mixes an older `tx` with a newer `op` gets a value no higher
    /// than the newest one written (see `flushed_bound`).
    flushed_tx: AtomicU64,
    flushed_op: AtomicU64,
}

// SAFETY: atomic integers only; zero is valid and equals `Default` (tag 0: never used).
unsafe impl Zeroable for Entry {}

/// Why a stint operation did not apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Gone {
    /// The stint ended (or the entry moved on to another stint) before the CAS.
    Ended,
}

impl Entry {
    #[inline]
    pub(super) fn load(&self) -> State {
        // Acquire: pairs with the Release of whoever last changed the word (start, extend,
        // mutate release), so the fields written before it are visible.
        State(self.state.load(Ordering::Acquire))
    }

    /// `last_sent` as of state `s` (read after `s` was loaded with `Acquire`).
    #[inline]
    pub(super) fn sent(&self, s: State) -> Offset {
        let b = (s.ver() & 1) as usize * 2;
        // Relaxed: ordered after the state load that published this buffer (Acquire there).
        Offset::new(
            self.sent[b].load(Ordering::Relaxed),
            self.sent[b + 1].load(Ordering::Relaxed),
        )
    }

    /// An upper bound of the *newest* report written in this stint, and a lower bound of the
    /// report as of any earlier complete write (see the field docs): reading `tx` with
    /// `Acquire` makes the `op` written before it visible; a newer `op` may mix in, giving a
    /// value between two consecutive writes. Meaningful when `s` has `HAS_FLUSHED`.
    #[inline]
    pub(super) fn flushed_bound(&self) -> Offset {
        // Acquire: pairs with the Release store of `flushed_tx` in `write_flushed`.
        let tx = self.flushed_tx.load(Ordering::Acquire);
        // Relaxed: ordered after the tx load above.
        let op = self.flushed_op.load(Ordering::Relaxed);
        Offset::new(tx, op)
    }

    /// Is a delivery of stint `tag` at `offset` done, judging by state `s`? Conservative: a
    /// half-written report may read as "not yet", never as done when it is not.
    ///
    /// A mixed read `(tx_i, op_j)` of reports `i < j` covers `offset` only if `tx_i > offset.tx`
    /// (then report `i` covers it) or `tx_i == offset.tx` and `op_j >= offset.op` (then report
    /// `j`, whose `tx` is at least `tx_i`, covers it).
    #[inline]
    pub(super) fn covers(&self, s: State, tag: u32, offset: Offset) -> bool {
        !s.is_stint(tag) || (s.has(HAS_FLUSHED) && self.flushed_bound() >= offset)
    }

    /// Starts stint `next` (from [`State::next_stint`]) for `owner` with its first delivery.
    /// Only the committer calls this, on an entry that is not `LIVE`; nobody else writes such a
    /// word, so a plain store suffices.
    pub(super) fn start(&self, next: State, owner: u64, sent: Offset) {
        // Relaxed: published by the Release store of the state below.
        self.owner.store(owner, Ordering::Relaxed);
        self.sent[0].store(sent.tx, Ordering::Relaxed);
        self.sent[1].store(sent.op, Ordering::Relaxed);
        // Release: publishes owner and sent (ver 0 selects buffer 0) to whoever loads the
        // state with Acquire.
        self.state.store(next.0, Ordering::Release);
    }

    /// The committer delivers another commit to live stint `tag`.
    pub(super) fn extend(&self, tag: u32, sent: Offset) -> Result<(), Gone> {
        let mut s = self.load();
        loop {
            if !s.is_stint(tag) {
                return Err(Gone::Ended);
            }
            let next = s.with_ver(s.ver() + 1);
            let b = (next.ver() & 1) as usize * 2;
            // Relaxed: published by the Release CAS below. A reader of the previous version
            // reads the other buffer; one still holding an older version may read these
            // stores half-done, but its CAS from that version fails.
            self.sent[b].store(sent.tx, Ordering::Relaxed);
            self.sent[b + 1].store(sent.op, Ordering::Relaxed);
            // Release: publishes the buffer with the version that selects it.
            match self.state.compare_exchange_weak(
                s.0,
                next.0,
                Ordering::Release,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(()),
                Err(actual) => s = State(actual),
            }
        }
    }

    /// CAS from `s` to `to`; on failure returns the current state.
    #[inline]
    pub(super) fn cas(&self, s: State, to: State) -> Result<(), State> {
        // AcqRel: Release publishes what the actor wrote before (e.g. `flushed_*`), Acquire
        // orders it after whatever the previous change published.
        self.state
            .compare_exchange(s.0, to.0, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| ())
            .map_err(State)
    }

    /// Ends live stint `tag` (optionally as an eviction with `reason`). Waits for a `MUT`
    /// holder to finish. Returns the state it ended, or `Gone` if the stint had already ended.
    pub(super) fn end(&self, tag: u32, evicting: Option<u8>) -> Result<State, Gone> {
        let mut s = self.load();
        let mut backoff = Backoff::new();
        loop {
            if !s.is_stint(tag) {
                return Err(Gone::Ended);
            }
            if s.has(MUT) {
                backoff.snooze();
                s = self.load();
                continue;
            }
            match self.cas(s, s.ended(evicting)) {
                Ok(()) => return Ok(s),
                Err(actual) => s = actual,
            }
        }
    }

    /// Takes `MUT` on live stint `tag`, waiting for another holder. Returns the state with
    /// `MUT` set (pass it to [`release`](Self::release)).
    pub(super) fn acquire(&self, tag: u32) -> Result<State, Gone> {
        let mut s = self.load();
        let mut backoff = Backoff::new();
        loop {
            if !s.is_stint(tag) {
                return Err(Gone::Ended);
            }
            if s.has(MUT) {
                backoff.snooze();
                s = self.load();
                continue;
            }
            let held = s.with(MUT, 0);
            match self.cas(s, held) {
                Ok(()) => return Ok(held),
                Err(actual) => s = actual,
            }
        }
    }

    /// Releases `MUT` (taken with [`acquire`](Self::acquire)), applying `set` / `clear` to the
    /// flags and bumping `ver` by 2 so every older snapshot's CAS fails. Returns the state just
    /// before the release (its `HEAD` bit tells whether the drainer was parked here; `HEAD` is
    /// cleared when `clear` says so).
    pub(super) fn release(&self, mut s: State, set: u64, clear: u64) -> State {
        loop {
            debug_assert!(s.has(MUT));
            let to = s.with(set, clear | MUT);
            let to = to.with_ver(to.ver() + 2);
            match self.cas(s, to) {
                Ok(()) => return s,
                // Only the committer's extend (ver + 1) and a park (HEAD) can change the word
                // while we hold MUT: retry from the new value.
                Err(actual) => s = actual,
            }
        }
    }

    /// Writes this stint's new highest report. Caller holds `MUT`.
    pub(super) fn write_flushed(&self, offset: Offset) {
        // Relaxed: made visible by the Release store of tx below (and the release CAS).
        self.flushed_op.store(offset.op, Ordering::Relaxed);
        // Release: a reader that sees this tx (Acquire) sees the op above.
        self.flushed_tx.store(offset.tx, Ordering::Release);
    }
}

#[cfg(all(test, not(tidemark_loom)))]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Entry>(), 64);
        assert_eq!(std::mem::align_of::<Entry>(), 64);
    }

    #[test]
    fn stints_and_versions() {
        let e = Entry::default();
        let s0 = e.load();
        assert!(!s0.live() && s0.tag() == 0);
        let first = s0.next_stint();
        assert_eq!(first.tag(), 1);
        e.start(first, 42, Offset::new(5, 1));
        let s = e.load();
        assert!(s.is_stint(1) && s.has(INDEXED) && !s.has(MUT));
        assert_eq!(e.sent(s), Offset::new(5, 1));
        e.extend(1, Offset::new(6, 0)).unwrap();
        let s2 = e.load();
        assert_eq!(s2.ver(), 1);
        assert_eq!(e.sent(s2), Offset::new(6, 0));
        assert_eq!(e.cas(s, s.ended(None)), Err(s2), "old snapshot must fail");
        let held = e.acquire(1).unwrap();
        e.write_flushed(Offset::new(5, 9));
        let before = e.release(held, HAS_FLUSHED, CHALLENGED);
        assert!(before.has(MUT));
        let s3 = e.load();
        assert_eq!(s3.ver(), 3);
        assert_eq!(
            e.sent(s3),
            Offset::new(6, 0),
            "release keeps the buffer parity"
        );
        assert!(e.covers(s3, 1, Offset::new(5, 9)) && !e.covers(s3, 1, Offset::new(6, 0)));
        e.end(1, Some(3)).unwrap();
        let s4 = e.load();
        assert!(!s4.live() && s4.has(EVICTING) && s4.evict_reason() == 3);
        assert!(e.covers(s4, 1, Offset::new(9, 9)));
        assert_eq!(e.end(1, None), Err(Gone::Ended));
        assert_eq!(s4.next_stint().tag(), 2);
        let wrap = State(TAG_MASK << TAG_SHIFT).next_stint();
        assert_eq!(wrap.tag(), 1, "tag 0 is skipped");
    }
}
