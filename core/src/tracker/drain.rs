//! The drain token: who may pop the delivery log, compact it and publish the ack.
//!
//! # The token word
//!
//! | value | meaning | how a thread takes it |
//! | --- | --- | --- |
//! | `IDLE` | no holder; the log was empty when the last holder left | CAS to `HELD` (the committer does after appending) |
//! | `HELD` | one thread holds the token and runs the log | — (only the holder leaves it, by a store) |
//! | `PARKED` | no holder; the head delivery was not done, and its entry carries `HEAD` | by clearing that `HEAD` bit with a CAS on the entry's state, then storing `HELD` |
//! | `BACKLOG` | no holder; the holder ran out of budget with deliveries left | CAS to `HELD` (every call looks) |
//!
//! Exactly one thread holds the token at a time, and it alone touches the consumer half of the
//! log and the head record, and writes the ack. `HEAD` is set on at most one entry, and only
//! while the token is `PARKED`: the one CAS that clears it (a flush that completes or
//! progresses the stint, its end, or a thief that wants to compact) hands the token over. So
//! taking a parked token costs no RMW beyond the state CAS the writer does anyway.
//!
//! # Parking (edge D1)
//!
//! A holder that finds the head delivery not done publishes `ack = head.tx − 1`, records the
//! head, stores `PARKED`, then CASes `HEAD` into the entry's state from the very value it
//! judged. If that CAS succeeds, any later change of the stint that may finish the delivery is
//! a CAS on the same word that clears `HEAD`: the writer that makes it becomes the holder and
//! judges again. If it fails, the stint changed after the judgement; nobody can have taken the
//! token (no `HEAD` bit is set), so the holder stores `HELD` again and judges again.
//!
//! # Leaving an empty log (edge D2)
//!
//! A holder that sees the log empty takes the commit lock, looks again, and only then leaves
//! `IDLE` (with the ack at `last_seen`). The committer publishes under that lock and reads the
//! token after releasing it. So either the holder saw the new deliveries, or the committer
//! sees `IDLE` and takes the token.
//!
//! # Budget
//!
//! One call examines at most [`Tracker::call_budget`] deliveries (popped, judged or compacted;
//! 1 024 by default). A holder that reaches it publishes a safe ack (`next.tx − 1`: every
//! delivery before `next` is done) and leaves `BACKLOG`; the next call of any kind, or
//! [`Tracker::run_backlog`], continues.

use super::Tracker;
use super::entry::{EVICTING, HEAD, RESERVED};
use super::log::{Compacted, Consumer, Delivery};
use crate::Offset;
use crate::sync::{AtomicU64, Ordering, fence};

/// Deliveries one call may examine (pop, judge or compact), unless the host sets another
/// budget ([`Tracker::set_call_budget`]).
pub(super) const BUDGET: usize = if crate::sync::LOOM { 3 } else { 1024 };

pub(super) const IDLE: u64 = 0;
pub(super) const HELD: u64 = 1;
pub(super) const PARKED: u64 = 2;
pub(super) const BACKLOG: u64 = 3;

/// `pin` value of the head record when nothing pins the ack.
const NO_PIN: u64 = u64::MAX;

/// What the drain parked on: written by the token holder, read by `pinning` (a seqlock: one
/// writer, readers retry).
#[derive(Default)]
pub(super) struct HeadRecord {
    seq: AtomicU64,
    /// `entry | tag << 32`, or `NO_PIN` (zero until the first park: `valid` says whether any).
    pin: AtomicU64,
    tx: AtomicU64,
    op: AtomicU64,
}

impl HeadRecord {
    #[inline]
    fn write(&self, pin: u64, offset: Offset) {
        // Relaxed: only the token holder writes; it reads its own last value.
        let seq = self.seq.load(Ordering::Relaxed);
        // Seqlock write: odd sequence, Release fence, fields, even sequence with Release.
        self.seq.store(seq + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        self.pin.store(pin, Ordering::Relaxed);
        self.tx.store(offset.tx, Ordering::Relaxed);
        self.op.store(offset.op, Ordering::Relaxed);
        self.seq.store(seq + 2, Ordering::Release);
    }

    fn clear(&self) {
        if self.pin.load(Ordering::Relaxed) != NO_PIN || self.seq.load(Ordering::Relaxed) == 0 {
            self.write(NO_PIN, Offset::ZERO);
        }
    }

    /// `(entry, tag, offset)` of the parked head delivery, if any; `None` also when the record
    /// kept changing under the reader.
    pub(super) fn read(&self) -> Option<Delivery> {
        for _ in 0..64 {
            // Acquire: pairs with the writer's final Release store of `seq`.
            let s1 = self.seq.load(Ordering::Acquire);
            if s1 & 1 == 1 {
                crate::sync::spin_hint();
                continue;
            }
            // Relaxed loads, then an Acquire fence before re-reading the sequence: if it did
            // not change, no write overlapped these loads.
            let pin = self.pin.load(Ordering::Relaxed);
            let tx = self.tx.load(Ordering::Relaxed);
            let op = self.op.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == s1 {
                if s1 == 0 || pin == NO_PIN {
                    return None;
                }
                return Some(Delivery {
                    entry: pin as u32,
                    tag: (pin >> 32) as u32,
                    offset: Offset::new(tx, op),
                });
            }
        }
        None
    }
}

/// How a holder leaves the token (done after its consumer access ended).
enum Leave<'a> {
    /// The log was empty: leave `IDLE`, still under the commit lock.
    Idle(crate::sync::SpinGuard<'a, super::Committer>),
    /// The budget ran out with deliveries left.
    Backlog,
    /// Park on this entry, judged in this state.
    Park(&'a super::entry::Entry, super::entry::State),
}

impl Tracker {
    /// Takes an `IDLE` or `BACKLOG` token. On success the caller must run
    /// [`hold`](Self::hold) (which leaves it again).
    #[inline]
    pub(super) fn take_token(&self) -> bool {
        // Relaxed first look: most calls find it HELD or PARKED and need nothing.
        let mut cur = self.drain.load(Ordering::Relaxed);
        while cur == IDLE || cur == BACKLOG {
            // Acquire: orders us after the previous holder's writes (consumer state, head
            // record, ack), which it made before leaving with a Release store.
            match self
                .drain
                .compare_exchange_weak(cur, HELD, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
        false
    }

    /// Takes a `PARKED` token by clearing `HEAD` on the parked entry (for compaction while the
    /// head is pinned). False if the token is not parked or someone else took it first.
    pub(super) fn steal_parked(&self) -> bool {
        // Relaxed: a first look; the CAS on the entry decides.
        if self.drain.load(Ordering::Relaxed) != PARKED {
            return false;
        }
        let Some(d) = self.head.read() else {
            return false;
        };
        let Some(e) = self.entries.get(d.entry) else {
            return false;
        };
        let mut s = e.load();
        // `HEAD` is set on at most one entry, only while parked: finding it here means this is
        // the parked entry, whatever the head record (which we may have read stale) says.
        while s.tag() == d.tag && s.has(HEAD) {
            match e.cas(s, s.with(0, HEAD)) {
                Ok(()) => {
                    self.token_taken();
                    return true;
                }
                Err(actual) => s = actual,
            }
        }
        false
    }

    /// The caller's CAS cleared `HEAD`: it holds the token now. Marks it held and drains
    /// within a whole call budget. Returns the work done.
    pub(super) fn head_released(&self, now: Option<u64>) -> usize {
        self.head_released_within(now, self.call_budget())
    }

    /// [`head_released`](Self::head_released) within what is left of this call's budget
    /// (`budget`, possibly 0: then the holder leaves a backlog at once, for later calls).
    pub(super) fn head_released_within(&self, now: Option<u64>, budget: usize) -> usize {
        self.token_taken();
        self.hold_within(now, false, budget)
    }

    #[inline]
    fn token_taken(&self) {
        // Relaxed: nobody else changes a PARKED word (taking it needs the HEAD bit we cleared,
        // whose CAS synchronised us with the parker); the store only tells others it is held.
        self.drain.store(HELD, Ordering::Relaxed);
    }

    /// Continues a backlog left by an earlier call, within this call's budget. One load when
    /// there is none.
    #[inline]
    pub(super) fn help_backlog(&self, now: Option<u64>) {
        // Relaxed: a hint; the CAS in `take_token` decides.
        if self.drain.load(Ordering::Relaxed) == BACKLOG && self.take_token() {
            self.hold(now, false);
        }
    }

    /// Runs the log while holding the token, then leaves it: one compaction step when
    /// `compact` (and the log wants one), then draining, within the call budget. Returns the
    /// work done (deliveries examined).
    pub(super) fn hold(&self, now: Option<u64>, compact: bool) -> usize {
        self.hold_within(now, compact, self.call_budget())
    }

    /// [`hold`](Self::hold) within `budget` deliveries (what is left of the caller's budget).
    fn hold_within(&self, now: Option<u64>, compact: bool, budget: usize) -> usize {
        let mut work = 0;
        let mut compact = compact;
        loop {
            // The consumer is touched only inside this closure; the token is handed over
            // (below) only after it returned, so no two holders' accesses ever overlap.
            let leave = self.consumer.with_mut(|p| {
                // SAFETY: we hold the token: no other thread touches the consumer until we
                // hand the token over, after this closure; the next holder's Acquire (CAS on
                // the token word or on the parked entry) orders it after our Release.
                let consumer = unsafe { &mut *p };
                if std::mem::take(&mut compact) && self.log.wants_compaction() {
                    // Half the budget at most: the drain needs some to judge the head again.
                    let share = budget.div_ceil(2);
                    if let Compacted::Scanned(n) =
                        consumer.compact_step(&self.log, share, |d| self.delivery_done(d))
                    {
                        work += n;
                        self.work.scanned.add_holder(n as u64);
                    }
                }
                self.drain_held(consumer, now, budget, &mut work)
            });
            match leave {
                Leave::Idle(committer) => {
                    // Release: our writes (consumer, head record, ack, counters) before the
                    // next holder's Acquire CAS. Stored under the commit lock (edge D2).
                    self.drain.store(IDLE, Ordering::Release);
                    drop(committer);
                    break;
                }
                Leave::Backlog => {
                    // Release: as for IDLE.
                    self.drain.store(BACKLOG, Ordering::Release);
                    break;
                }
                Leave::Park(entry, s) => {
                    // Edge D1: PARKED first, then the HEAD bit, so whoever clears the bit finds
                    // the word PARKED and marks it held. Relaxed: the hand-over synchronises
                    // through the entry's state word (our Release CAS, the taker's Acquire).
                    self.drain.store(PARKED, Ordering::Relaxed);
                    debug_assert!(!s.has(RESERVED) && !s.has(EVICTING));
                    if entry.cas(s, s.with(HEAD, 0)).is_ok() {
                        break;
                    }
                    // The stint changed after we judged it. No HEAD bit is set, so nobody took
                    // the token: it is still ours. Judge again.
                    self.token_taken();
                }
            }
        }
        self.work.record_call(work as u64);
        work
    }

    /// Is this delivery done (its stint ended, or a report of that stint covers it)?
    #[inline]
    pub(super) fn delivery_done(&self, d: &Delivery) -> bool {
        let e = self.entry(d.entry);
        e.covers(e.load(), d.tag, d.offset)
    }

    /// The drain loop (see the module docs): pops done deliveries within `budget` (counting
    /// into `work`), publishes the ack, and says how to leave the token.
    fn drain_held(
        &self,
        c: &mut Consumer,
        now: Option<u64>,
        budget: usize,
        work: &mut usize,
    ) -> Leave<'_> {
        // Deliveries popped, and how many were not tombstones (compaction counted those).
        let (mut popped, mut live) = (0u64, 0u64);
        let leave = loop {
            let d = match c.peek(&self.log) {
                Some(d) => d,
                None => {
                    // Edge D2: look again under the commit lock before leaving IDLE.
                    let cs = self.committer.lock();
                    match c.peek(&self.log) {
                        Some(d) => {
                            drop(cs);
                            d
                        }
                        None => {
                            // Every commit up to the last one is done (`last_tx` is the last
                            // commit's tx, or the initial ack, which is the ack already).
                            // The head record first, then the ack: a reader that saw the
                            // new ack finds no stale head (`pinning`).
                            self.head.clear();
                            if let Some(last) = cs.last_tx {
                                self.publish_ack(last, now);
                            }
                            break Leave::Idle(cs);
                        }
                    }
                }
            };
            if *work >= budget {
                // Every delivery before `d` is done: acking below `d.tx` is safe. The head is
                // moving: no head record (cleared before the ack moves, as below).
                self.head.clear();
                if let Some(tx) = d.offset.tx.checked_sub(1) {
                    self.publish_ack(tx, now);
                }
                self.work.backlogs.add_holder(1);
                break Leave::Backlog;
            }
            *work += 1;
            let e = self.entry(d.entry);
            let s = e.load();
            if e.covers(s, d.tag, d.offset) {
                c.pop();
                popped += 1;
                live += (d.tag != 0) as u64;
                continue;
            }
            // The head record before the ack (Release both): whoever reads the new ack and
            // then the record finds this head or a later one, never the one it replaced.
            self.head
                .write(d.entry as u64 | ((d.tag as u64) << 32), d.offset);
            if let Some(tx) = d.offset.tx.checked_sub(1) {
                self.publish_ack(tx, now);
            }
            break Leave::Park(e, s);
        };
        c.dropped(&self.log, live);
        self.work.popped.add_holder(popped);
        leave
    }

    /// Raises the ack to `ack` if higher. Only the token holder calls it (the only writer).
    fn publish_ack(&self, ack: u64, now: Option<u64>) {
        let encoded = ack + 1;
        // Relaxed load: we are the only writer.
        if encoded <= self.ack.load(Ordering::Relaxed) {
            return;
        }
        // Release: pairs with `ack()`'s Acquire.
        self.ack.store(encoded, Ordering::Release);
        self.counters.ack_advances.add_holder(1);
        // Relaxed: the last commit's `now`, for calls that carry none.
        let at = now.unwrap_or_else(|| self.last_now.load(Ordering::Relaxed));
        // Relaxed: a statistic (`stats` reads it).
        self.ack_moved_at.store(at + 1, Ordering::Relaxed);
        // Edge A2, store-buffering with `wait_ack` (waiters += 1; fence; load ack): either the
        // waiter sees this ack or we see its registration and notify under its lock.
        fence(Ordering::SeqCst);
        if self.waiters.load(Ordering::Relaxed) > 0 {
            let _g = self.wait_lock.lock();
            self.wait_cv.notify_all();
        }
    }

    /// Runs one budgeted step of leftover work (a drain backlog or a compaction pass) from a
    /// host's background thread. Returns true while more remains (call again). A tracker
    /// without a backlog returns false at once.
    pub fn run_backlog(&self) -> bool {
        let compact = self.log.wants_compaction();
        // Relaxed: a hint; `take_token` / `steal_parked` decide.
        let held = match self.drain.load(Ordering::Relaxed) {
            BACKLOG => self.take_token(),
            IDLE if compact => self.take_token(),
            PARKED if compact => self.steal_parked(),
            _ => false,
        };
        if held {
            self.hold(None, true);
        }
        self.has_backlog()
    }

    /// The most deliveries one call may examine (pop, judge or compact); default 1 024.
    pub fn call_budget(&self) -> usize {
        // Relaxed: a configuration value with no data attached.
        self.budget.load(Ordering::Relaxed)
    }

    /// Sets the per-call budget (at least 1; a host with a tighter time limit per call sets a
    /// smaller one). Larger backlogs simply take more calls.
    pub fn set_call_budget(&self, deliveries: usize) {
        // Relaxed: see `call_budget`.
        self.budget.store(deliveries.max(1), Ordering::Relaxed);
    }

    /// True when a drain backlog or a compaction pass is left for later calls.
    pub fn has_backlog(&self) -> bool {
        // Relaxed: a snapshot.
        self.drain.load(Ordering::Relaxed) == BACKLOG || self.log.wants_compaction()
    }
}
