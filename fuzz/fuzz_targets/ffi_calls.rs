//! Fuzz target `ffi_calls`: sequences of C ABI calls through the exported functions of the
//! `tidemark-ffi` crate, exactly as a C host makes them (raw pointers, C structs).
//!
//! Inputs are arbitrary writer ids (issued, stale or made up), offsets, array lengths, NULL /
//! misaligned / wrong-type / non-handle pointers, call budgets (0 included), flag bytes other
//! than 0 and 1, lying message lengths and huge timeouts. Checked after every call:
//!
//! - every call returns a status (a panic caught at the boundary, `PANIC`, fails the run; a
//!   crash or leak is reported by libFuzzer / AddressSanitizer / LeakSanitizer);
//! - the status is the one the contract names for that input (NULL → `NULL_ARGUMENT`, foreign
//!   handle → `INVALID_HANDLE`, misaligned array → `INVALID_ARGUMENT`, ...);
//! - a mirrored `tidemark_testkit::model::ExactModel` gets the same operations: same results and
//!   errors, the ack equal to the model's when no backlog is left (never above it, never
//!   backwards, while one is), same events;
//! - the batch buffer accounts for every accepted message (`accepted == delivered + failed +
//!   handed back`), with the bytes that were pushed.
//!
//! Use after free is out of scope (undefined behaviour by the ABI's contract).
#![no_main]

use std::collections::HashMap;
use std::mem::MaybeUninit;
use std::ptr;

use arbitrary::Arbitrary;
use ffi::*;
use libfuzzer_sys::fuzz_target;
use tidemark::{DownClass, Event, EvictReason, Offset, TrackerError, WriterId};
use tidemark_testkit::model::ExactModel;

type S = tidemark_status;

/// How a handle argument is passed.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Handle {
    Null,
    /// The handle's address plus one.
    Misaligned,
    /// A live handle of the other type (buffer for tracker, tracker for buffer).
    WrongType,
    /// An aligned pointer to eight zero bytes that are not a handle.
    NotAHandle,
}

/// How an out-parameter or array pointer is passed.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq)]
enum Ptr {
    Valid,
    Null,
    Misaligned,
}

/// A writer id argument.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Wid {
    /// One of the ids issued so far (live, evicted or stale).
    Issued(u8),
    /// Any 64-bit value.
    Raw(u64),
}

/// A flush report's offset, relative to what the writer owes.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Off {
    /// Exactly `last_sent`.
    LastSent,
    /// Below `last_sent` (partial progress).
    Partial,
    /// Beyond `last_sent`.
    Beyond,
    /// An earlier commit's offset.
    Old(u8),
    Raw(u64, u64),
}

/// A message pushed into the batch buffer.
#[derive(Arbitrary, Debug, Clone, Copy)]
struct Msg {
    len: u8,
    /// A length above `capacity_bytes` with only `len` bytes behind `data` (never read).
    lie: Option<u64>,
    /// The `has_offset` byte; anything but 0 or 1 must be refused.
    flag: u8,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Register(Ptr),
    Unregister(Wid),
    Commit {
        step: u8,
        op: u8,
        writers: Vec<Wid>,
        arr: Ptr,
        dt: u8,
    },
    Flushed(Wid, Off, u8),
    FlushedMany(Vec<(Wid, Off)>, Ptr, u8),
    Remove(Wid),
    Down(Wid, u32, u8),
    Touch(Wid, u8),
    Pause(Wid),
    Resume(Wid, u8),
    Sweep(u16, Ptr),
    TakeEvents(u8, Ptr),
    SetBudget(u16),
    RunBacklog(Ptr),
    SetGrace(u16),
    WaitAck(Option<u64>, u64),
    Queries(Ptr, u16),
    WriterStatus(Wid, Ptr),
    /// A tracker call (picked by the number) through a bad handle.
    BadTracker(u8, Handle),
    /// A buffer call (picked by the number) through a bad handle.
    BadBuffer(u8, Handle),
    /// `tidemark_tracker_new` with these options, released at once. (`expected_writers` stays
    /// below 65 536: a huge one allocates lazily, which libFuzzer's malloc limit would report
    /// as an out-of-memory crash; core's own tests cover it.)
    NewTracker {
        flag: u8,
        initial_ack: u64,
        expected: u16,
        max: u64,
    },
    Push(Msg),
    PushMany(Vec<Msg>, Ptr),
    /// A packed push; `tamper` 1 makes `payload_len` disagree with the lengths.
    PushPacked(Vec<Msg>, u8),
    Poll(Ptr),
    BatchAck(u8),
    BatchNack(u8, bool),
    BatchFree(u8),
    BatchRead(u8, u8),
    Flush0,
    BeginStop(u8),
    PollStop,
    BufferStats,
}

/// Everything the run set up.
#[derive(Arbitrary, Debug)]
struct Input {
    initial_ack: Option<u8>,
    grace: u16,
    max_writers: u8,
    config: (u8, u8, u8, u8, u8),
    ops: Vec<Op>,
}

/// The status the mirrored model implies.
fn status_of(r: &Result<(), TrackerError>) -> S {
    match r {
        Ok(()) => S::Ok,
        Err(TrackerError::OffsetRegressed { .. }) => S::OffsetRegressed,
        Err(TrackerError::UnknownWriter(_)) => S::UnknownWriter,
        Err(TrackerError::EvictedWriter(_)) => S::EvictedWriter,
        Err(TrackerError::CapacityExceeded { .. }) => S::Capacity,
        Err(TrackerError::OutOfMemory { .. }) => S::OutOfMemory,
        Err(TrackerError::InvalidArgument(_)) => S::InvalidArgument,
    }
}

/// A `has_offset` / `has_initial_ack` byte as the C struct field.
fn cbool(raw: u8) -> CBool {
    // SAFETY: `CBool` is `repr(transparent)` over a `u8`, so every byte is a valid value; the
    // library reads it as a byte and refuses anything but 0 and 1.
    unsafe { std::mem::transmute::<u8, CBool>(raw) }
}

/// An out-parameter pointer of the requested kind. `slot` backs the valid and misaligned ones.
fn out_ptr<T>(kind: Ptr, slot: &mut [u64; 8]) -> *mut T {
    match kind {
        Ptr::Valid => slot.as_mut_ptr().cast(),
        Ptr::Null => ptr::null_mut(),
        Ptr::Misaligned => slot.as_mut_ptr().cast::<u8>().wrapping_add(1).cast(),
    }
}

/// What a pointer kind must give (for an out-parameter: `Null` → `NULL_ARGUMENT`, `Misaligned`
/// → `INVALID_ARGUMENT`).
fn ptr_status(kind: Ptr) -> Option<S> {
    match kind {
        Ptr::Valid => None,
        Ptr::Null => Some(S::NullArgument),
        Ptr::Misaligned => Some(S::InvalidArgument),
    }
}

/// A batch handed out to the sink and not yet released.
struct Held {
    batch: *mut tidemark_batch,
    ids: Vec<u64>,
    bytes: u64,
}

struct Run {
    t: *mut tidemark_tracker,
    b: *mut tidemark_batch_buffer,
    /// Eight zero bytes that are not a handle.
    fake: Box<[u64; 2]>,
    m: ExactModel,
    ids: Vec<WriterId>,
    registered: usize,
    max_writers: usize,
    commits: Vec<Offset>,
    next_tx: u64,
    now: u64,
    last_ack: Option<u64>,
    /// Events taken through the ABI and not yet compared with the model's.
    taken: Vec<tidemark_event>,
    // The batch buffer side.
    capacity_messages: u64,
    capacity_bytes: u64,
    next_msg: u64,
    payloads: HashMap<u64, Vec<u8>>,
    queued: (u64, u64),
    accepted: u64,
    delivered: u64,
    failed: u64,
    held: Vec<Held>,
    stopping: bool,
    report: *mut tidemark_stop_report,
}

impl Run {
    fn wid(&self, w: Wid) -> WriterId {
        match w {
            Wid::Issued(i) if !self.ids.is_empty() => self.ids[i as usize % self.ids.len()],
            Wid::Issued(i) => WriterId::from_raw(u64::from(i)),
            Wid::Raw(raw) => WriterId::from_raw(raw),
        }
    }

    fn offset(&self, w: WriterId, off: Off) -> Offset {
        let ls = self.m.last_sent(w);
        match (off, ls) {
            (Off::LastSent, Some(ls)) => ls,
            (Off::Partial, Some(ls)) if ls.op > 0 => Offset::new(ls.tx, ls.op - 1),
            (Off::Partial, Some(ls)) => Offset::new(ls.tx.saturating_sub(1), 7),
            (Off::Beyond, Some(ls)) => Offset::new(ls.tx + 1, 0),
            (Off::Old(i), _) if !self.commits.is_empty() => {
                self.commits[i as usize % self.commits.len()]
            }
            (Off::Raw(tx, op), _) => Offset::new(tx, op),
            _ => Offset::ZERO,
        }
    }

    fn bad_handle<T>(&self, h: Handle, real: *const T, other: *const u8) -> *const T {
        match h {
            Handle::Null => ptr::null(),
            Handle::Misaligned => real.cast::<u8>().wrapping_add(1).cast(),
            Handle::WrongType => other.cast(),
            Handle::NotAHandle => self.fake.as_ptr().cast(),
        }
    }

    /// The ack through the ABI.
    fn ack(&self) -> Option<u64> {
        let mut a = u64::MAX;
        // SAFETY: a live tracker handle and a writable u64.
        match unsafe { tidemark_tracker_ack(self.t, &mut a) } {
            S::Ok => Some(a),
            S::Empty => None,
            s => panic!("tidemark_tracker_ack: {s:?}"),
        }
    }

    fn has_backlog(&self) -> bool {
        let mut more = false;
        // SAFETY: a live tracker handle and a writable bool.
        assert_eq!(
            unsafe { tidemark_tracker_has_backlog(self.t, &mut more) },
            S::Ok
        );
        more
    }

    /// The invariants after every tracker call.
    fn check(&mut self) {
        let ack = self.ack();
        assert!(
            ack >= self.last_ack,
            "ack moved backwards: {:?} -> {ack:?}",
            self.last_ack
        );
        self.last_ack = ack;
        if self.has_backlog() {
            assert!(
                ack <= self.m.ack(),
                "ack {ack:?} above exact {:?} mid-backlog",
                self.m.ack()
            );
        } else {
            assert_eq!(ack, self.m.ack(), "ack must equal the exact model");
        }
        // Take what is left of the events and compare them, as a multiset, with the model's.
        let mut buf = [tidemark_event {
            kind: tidemark_event_kind::Challenged,
            reason: tidemark_evict_reason::None,
            writer: 0,
        }; 16];
        loop {
            let mut n = usize::MAX;
            // SAFETY: a live tracker, 16 writable events, a writable usize.
            let s = unsafe { tidemark_tracker_take_events(self.t, buf.as_mut_ptr(), 16, &mut n) };
            assert_eq!(s, S::Ok);
            assert!(n <= 16);
            self.taken.extend_from_slice(&buf[..n]);
            if n < 16 {
                break;
            }
        }
        let key = |e: &tidemark_event| (e.writer, e.kind as u32, e.reason as u32);
        let mut got: Vec<_> = self.taken.drain(..).map(|e| key(&e)).collect();
        let mut want: Vec<_> = self
            .m
            .take_events()
            .into_iter()
            .map(|e| {
                let reason = |r| match r {
                    EvictReason::Crashed => tidemark_evict_reason::Crashed,
                    EvictReason::Orphaned => tidemark_evict_reason::Orphaned,
                    EvictReason::Stalled => tidemark_evict_reason::Stalled,
                };
                let e = match e {
                    Event::Challenged(w) => tidemark_event {
                        kind: tidemark_event_kind::Challenged,
                        reason: tidemark_evict_reason::None,
                        writer: w.to_raw(),
                    },
                    Event::Evicted(w, r) => tidemark_event {
                        kind: tidemark_event_kind::Evicted,
                        reason: reason(r),
                        writer: w.to_raw(),
                    },
                    Event::Removed(w) => tidemark_event {
                        kind: tidemark_event_kind::Removed,
                        reason: tidemark_evict_reason::None,
                        writer: w.to_raw(),
                    },
                };
                key(&e)
            })
            .collect();
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want, "events");
    }

    fn tracker_op(&mut self, op: &Op) {
        let mut slot = [0u64; 8];
        match *op {
            Op::Register(p) => {
                let mut want = ptr_status(p).unwrap_or(S::Ok);
                if want == S::Ok && self.registered >= self.max_writers {
                    want = S::Capacity;
                }
                // SAFETY: a live tracker; the out pointer is NULL, misaligned or writable.
                let s = unsafe { tidemark_tracker_register(self.t, out_ptr(p, &mut slot)) };
                assert_eq!(s, want, "register");
                if s == S::Ok {
                    let w = self.m.register();
                    assert_eq!(slot[0], w.to_raw(), "register issues the model's id");
                    self.ids.push(w);
                    self.registered += 1;
                }
            }
            Op::Unregister(w) => {
                let w = self.wid(w);
                let r = self.m.unregister(w);
                // SAFETY: a live tracker.
                let s = unsafe { tidemark_tracker_unregister(self.t, w.to_raw()) };
                assert_eq!(s, status_of(&r), "unregister {w:?}");
                if r.is_ok() {
                    self.registered -= 1;
                }
            }
            Op::Commit {
                step,
                op,
                ref writers,
                arr,
                dt,
            } => {
                self.now += u64::from(dt);
                let tx = match step {
                    0 => self.next_tx.saturating_sub(1),
                    255 => u64::MAX,
                    s => self.next_tx + u64::from(s % 3),
                };
                let offset = Offset::new(tx, u64::from(op % 4));
                let ws: Vec<WriterId> = writers.iter().take(6).map(|&w| self.wid(w)).collect();
                let raw: Vec<u64> = ws.iter().map(|w| w.to_raw()).collect();
                // Room for a misaligned copy: one spare element.
                let mut backing = vec![0u64; raw.len() + 1];
                let p: *const u64 = match arr {
                    Ptr::Valid => raw.as_ptr(),
                    Ptr::Null => ptr::null(),
                    Ptr::Misaligned => {
                        let p = backing.as_mut_ptr().cast::<u8>().wrapping_add(1);
                        // SAFETY: `backing` has 8 * (len + 1) bytes, so 8 * len from offset 1.
                        unsafe {
                            ptr::copy_nonoverlapping(raw.as_ptr().cast::<u8>(), p, raw.len() * 8)
                        };
                        p.cast()
                    }
                };
                let bad = if raw.is_empty() {
                    None
                } else {
                    ptr_status(arr)
                };
                let want = match bad {
                    Some(s) => s,
                    None => {
                        let r = self.m.commit(offset, &ws, self.now);
                        if r.is_ok() {
                            self.commits.push(offset);
                            self.next_tx = tx + 1;
                        }
                        status_of(&r)
                    }
                };
                let o = tidemark_offset {
                    tx: offset.tx,
                    op: offset.op,
                };
                // SAFETY: a live tracker; `p` is NULL, misaligned, or `raw.len()` readable ids.
                let s = unsafe { tidemark_tracker_commit(self.t, o, p, raw.len(), self.now) };
                assert_eq!(s, want, "commit {offset:?} to {ws:?} ({arr:?})");
            }
            Op::Flushed(w, off, dt) => {
                self.now += u64::from(dt);
                let w = self.wid(w);
                let offset = self.offset(w, off);
                let r = self.m.flushed(w, offset, self.now);
                let o = tidemark_offset {
                    tx: offset.tx,
                    op: offset.op,
                };
                // SAFETY: a live tracker.
                let s = unsafe { tidemark_tracker_flushed(self.t, w.to_raw(), o, self.now) };
                assert_eq!(s, status_of(&r), "flushed {w:?} {offset:?}");
            }
            Op::FlushedMany(ref items, arr, dt) => {
                self.now += u64::from(dt);
                let items: Vec<(WriterId, Offset)> = items
                    .iter()
                    .take(8)
                    .map(|&(w, off)| {
                        let w = self.wid(w);
                        (w, self.offset(w, off))
                    })
                    .collect();
                let ws: Vec<u64> = items.iter().map(|(w, _)| w.to_raw()).collect();
                let offs: Vec<tidemark_offset> = items
                    .iter()
                    .map(|(_, o)| tidemark_offset { tx: o.tx, op: o.op })
                    .collect();
                let mut statuses = vec![S::Panic; items.len()];
                let mut failed = usize::MAX;
                let n = items.len();
                let null_ok = n == 0;
                // `arr` applies to the statuses array (an out-array): NULL or misaligned.
                let mut backing = vec![0u64; n + 1];
                let sp: *mut S = match arr {
                    Ptr::Valid => statuses.as_mut_ptr(),
                    Ptr::Null => ptr::null_mut(),
                    Ptr::Misaligned => backing.as_mut_ptr().cast::<u8>().wrapping_add(1).cast(),
                };
                let want_bad = if null_ok { None } else { ptr_status(arr) };
                // SAFETY: a live tracker; `n` readable ids and offsets; `sp` NULL, misaligned
                // (inside `backing`, room for `n` statuses) or `n` writable statuses.
                let s = unsafe {
                    tidemark_tracker_flushed_many(
                        self.t,
                        ws.as_ptr(),
                        offs.as_ptr(),
                        n,
                        self.now,
                        sp,
                        &mut failed,
                    )
                };
                match want_bad {
                    Some(want) => assert_eq!(s, want, "flushed_many with {arr:?} statuses"),
                    None => {
                        assert_eq!(s, S::Ok, "flushed_many");
                        let mut bad = 0;
                        for (i, &(w, o)) in items.iter().enumerate() {
                            let want = status_of(&self.m.flushed(w, o, self.now));
                            assert_eq!(statuses[i], want, "flushed_many item {i}");
                            bad += usize::from(want != S::Ok);
                        }
                        assert_eq!(failed, bad);
                    }
                }
            }
            Op::Remove(w) => {
                let w = self.wid(w);
                let r = self.m.remove(w);
                // SAFETY: a live tracker.
                assert_eq!(
                    unsafe { tidemark_tracker_remove(self.t, w.to_raw()) },
                    status_of(&r)
                );
            }
            Op::Down(w, class, dt) => {
                self.now += u64::from(dt);
                let w = self.wid(w);
                let class = class % 4; // 3: not a class
                let want = match class {
                    0 => status_of(&self.m.down(w, DownClass::Crash, self.now)),
                    1 => status_of(&self.m.down(w, DownClass::Cleanup, self.now)),
                    2 => status_of(&self.m.down(w, DownClass::Teardown, self.now)),
                    _ => S::InvalidArgument,
                };
                // SAFETY: a live tracker.
                let s = unsafe { tidemark_tracker_down(self.t, w.to_raw(), class, self.now) };
                assert_eq!(s, want, "down {w:?} class {class}");
            }
            Op::Touch(w, dt) => {
                self.now += u64::from(dt);
                let w = self.wid(w);
                let r = self.m.touch(w, self.now);
                // SAFETY: a live tracker.
                let s = unsafe { tidemark_tracker_touch(self.t, w.to_raw(), self.now) };
                assert_eq!(s, status_of(&r));
            }
            Op::Pause(w) => {
                let w = self.wid(w);
                let r = self.m.pause(w);
                // SAFETY: a live tracker.
                assert_eq!(
                    unsafe { tidemark_tracker_pause(self.t, w.to_raw()) },
                    status_of(&r)
                );
            }
            Op::Resume(w, dt) => {
                self.now += u64::from(dt);
                let w = self.wid(w);
                let r = self.m.resume(w, self.now);
                // SAFETY: a live tracker.
                let s = unsafe { tidemark_tracker_resume(self.t, w.to_raw(), self.now) };
                assert_eq!(s, status_of(&r));
            }
            Op::Sweep(dt, p) => {
                let mut out = tidemark_sweep_outcome::default();
                let op: *mut tidemark_sweep_outcome = match p {
                    Ptr::Valid => &mut out,
                    _ => out_ptr(p, &mut slot),
                };
                // SAFETY: a live tracker; `op` NULL, misaligned or writable.
                let s = unsafe { tidemark_tracker_sweep(self.t, self.now + u64::from(dt), op) };
                if let Some(want) = ptr_status(p) {
                    assert_eq!(s, want, "sweep with a bad out pointer");
                    return;
                }
                self.now += u64::from(dt);
                assert_eq!(s, S::Ok);
                let produced = self.m.sweep(self.now);
                let evicted = produced
                    .iter()
                    .filter(|e| matches!(e, Event::Evicted(..)))
                    .count();
                assert_eq!(
                    (out.challenged, out.evicted),
                    (produced.len() - evicted, evicted)
                );
            }
            Op::TakeEvents(cap, p) => {
                let cap = usize::from(cap % 8);
                let mut buf = vec![
                    tidemark_event {
                        kind: tidemark_event_kind::Challenged,
                        reason: tidemark_evict_reason::None,
                        writer: 0,
                    };
                    cap
                ];
                let mut n = usize::MAX;
                let bp: *mut tidemark_event = match p {
                    Ptr::Valid => buf.as_mut_ptr(),
                    _ => out_ptr(p, &mut slot),
                };
                // SAFETY: a live tracker; `bp` NULL, misaligned (inside `slot`, which holds
                // one event: misaligned pointers are refused before any write) or `cap`
                // writable events.
                let s = unsafe { tidemark_tracker_take_events(self.t, bp, cap, &mut n) };
                match ptr_status(p) {
                    Some(want) if cap > 0 => assert_eq!(s, want, "take_events {p:?}"),
                    _ => {
                        assert_eq!(s, S::Ok);
                        assert!(n <= cap);
                        if p == Ptr::Valid {
                            self.taken.extend_from_slice(&buf[..n]);
                        }
                    }
                }
            }
            Op::SetBudget(v) => {
                let v = u64::from(v % 6);
                // SAFETY: a live tracker.
                let s = unsafe { tidemark_tracker_set_call_budget(self.t, v) };
                assert_eq!(s, if v == 0 { S::InvalidArgument } else { S::Ok });
            }
            Op::RunBacklog(p) => {
                let mut more = false;
                let mp: *mut bool = match p {
                    Ptr::Valid => &mut more,
                    _ => out_ptr(p, &mut slot),
                };
                // SAFETY: a live tracker; `mp` NULL, misaligned or writable.
                let s = unsafe { tidemark_tracker_run_backlog(self.t, mp) };
                match ptr_status(p) {
                    // (A misaligned bool does not exist: every address is aligned for it.)
                    Some(S::NullArgument) => assert_eq!(s, S::NullArgument),
                    _ => assert_eq!(s, S::Ok),
                }
                if p == Ptr::Valid {
                    assert_eq!(more, self.has_backlog());
                }
            }
            Op::SetGrace(g) => {
                self.m.set_stall_grace_ms(u64::from(g));
                // SAFETY: a live tracker.
                let s = unsafe { tidemark_tracker_set_stall_grace_ms(self.t, u64::from(g)) };
                assert_eq!(s, S::Ok);
            }
            Op::WaitAck(after, timeout) => {
                let ack = self.ack();
                let ready = match after {
                    Some(a) => ack.is_some_and(|x| x > a),
                    None => ack.is_some(),
                };
                // Never block: a huge timeout only when the ack is already there.
                let timeout = if ready { timeout } else { 0 };
                let mut out = u64::MAX;
                // SAFETY: a live tracker and a writable u64.
                let s = unsafe {
                    tidemark_tracker_wait_ack(
                        self.t,
                        after.unwrap_or(0),
                        after.is_some().into(),
                        timeout,
                        &mut out,
                    )
                };
                if ready {
                    assert_eq!(
                        s,
                        S::Ok,
                        "wait_ack({after:?}, {timeout} ms) with ack {ack:?}"
                    );
                    assert!(Some(out) >= ack);
                } else {
                    assert_eq!(s, S::Timeout, "wait_ack({after:?}, 0 ms) with ack {ack:?}");
                }
            }
            Op::Queries(p, dt) => {
                let now = self.now + u64::from(dt);
                let mut pin = MaybeUninit::<tidemark_pinning>::uninit();
                let mut stats = tidemark_tracker_counters::default();
                let mut work = tidemark_work_stats::default();
                let mut seen = tidemark_offset { tx: 0, op: 0 };
                let mut generation = 0u64;
                let bad = ptr_status(p);
                // SAFETY: a live tracker; each out pointer NULL, misaligned (into `slot`, 64
                // bytes, refused before any write) or writable for its type.
                unsafe {
                    let pp = if bad.is_some() {
                        out_ptr(p, &mut slot)
                    } else {
                        pin.as_mut_ptr()
                    };
                    let s = tidemark_tracker_pinning(self.t, now, pp);
                    match bad {
                        Some(want) => assert_eq!(s, want),
                        None => assert!(matches!(s, S::Ok | S::Empty), "pinning: {s:?}"),
                    }
                    let sp = if bad.is_some() {
                        out_ptr(p, &mut slot)
                    } else {
                        &mut stats
                    };
                    let s = tidemark_tracker_stats(self.t, now, sp);
                    assert_eq!(s, bad.unwrap_or(S::Ok));
                    let wp = if bad.is_some() {
                        out_ptr(p, &mut slot)
                    } else {
                        &mut work
                    };
                    assert_eq!(
                        tidemark_tracker_work_stats(self.t, wp),
                        bad.unwrap_or(S::Ok)
                    );
                    let lp = if bad.is_some() {
                        out_ptr(p, &mut slot)
                    } else {
                        &mut seen
                    };
                    let s = tidemark_tracker_last_seen(self.t, lp);
                    if bad.is_none() {
                        let want = self.m.last_seen();
                        assert_eq!(s, if want.is_some() { S::Ok } else { S::Empty });
                        if let Some(o) = want {
                            assert_eq!((seen.tx, seen.op), (o.tx, o.op));
                        }
                    }
                    let gp = if bad.is_some() {
                        out_ptr(p, &mut slot)
                    } else {
                        &mut generation
                    };
                    assert_eq!(
                        tidemark_tracker_ack_generation(self.t, gp),
                        bad.unwrap_or(S::Ok)
                    );
                }
                if bad.is_none() {
                    let ack = self.ack();
                    assert_eq!(
                        stats.has_ack,
                        ack.is_some(),
                        "stats has_ack with ack {ack:?}"
                    );
                    if let Some(a) = ack {
                        assert!(stats.ack >= a, "stats ack {} below ack {a}", stats.ack);
                    }
                    assert_eq!(stats.registered, self.registered as u64);
                }
            }
            Op::WriterStatus(w, p) => {
                let w = self.wid(w);
                let mut st = tidemark_writer_status {
                    state: tidemark_writer_state::Idle,
                    reason: tidemark_evict_reason::None,
                };
                let sp: *mut tidemark_writer_status = match p {
                    Ptr::Valid => &mut st,
                    _ => out_ptr(p, &mut slot),
                };
                // SAFETY: a live tracker; `sp` NULL, misaligned or writable.
                let s = unsafe { tidemark_tracker_writer_status(self.t, w.to_raw(), sp) };
                match ptr_status(p) {
                    Some(want) => assert_eq!(s, want),
                    None => assert!(matches!(s, S::Ok | S::UnknownWriter), "writer_status {s:?}"),
                }
            }
            Op::BadTracker(call, h) => {
                let p = self.bad_handle(h, self.t, self.b.cast());
                let want = if matches!(h, Handle::Null) {
                    S::NullArgument
                } else {
                    S::InvalidHandle
                };
                let mut u = 0u64;
                let mut flag = false;
                let o = tidemark_offset { tx: 1, op: 0 };
                // SAFETY: `p` is NULL, or points to at least 8 readable bytes (a live handle
                // of another type, 8 zero bytes, or one byte into our live tracker); the
                // library must refuse each before using it. Out pointers are writable.
                let s = unsafe {
                    match call % 10 {
                        0 => tidemark_tracker_register(p, &mut u),
                        1 => tidemark_tracker_commit(p, o, ptr::null(), 0, 0),
                        2 => tidemark_tracker_flushed(p, 1, o, 0),
                        3 => tidemark_tracker_ack(p, &mut u),
                        4 => tidemark_tracker_sweep(p, 0, &mut tidemark_sweep_outcome::default()),
                        5 => tidemark_tracker_run_backlog(p, &mut flag),
                        6 => tidemark_tracker_set_call_budget(p, 1),
                        7 => tidemark_tracker_down(p, 1, 0, 0),
                        8 => tidemark_tracker_take_events(p, ptr::null_mut(), 0, &mut (u as usize)),
                        _ => tidemark_tracker_wait_ack(p, 0, false.into(), 0, &mut u),
                    }
                };
                assert_eq!(s, want, "tracker call {} through a {h:?} handle", call % 10);
            }
            _ => unreachable!("not a tracker op"),
        }
    }

    fn msg(&mut self, m: Msg, store: &mut Vec<Vec<u8>>) -> (tidemark_message, Option<S>) {
        let id = self.next_msg;
        self.next_msg += 1;
        let payload: Vec<u8> = (0..m.len).map(|i| (id as u8).wrapping_add(i)).collect();
        let len = match m.lie {
            Some(extra) => (self.capacity_bytes + 1).saturating_add(extra % (1 << 40)) as usize,
            None => payload.len(),
        };
        let flag = m.flag % 4; // 0 and 1 valid; 2 and 3 must be refused
        let msg = tidemark_message {
            data: if payload.is_empty() {
                ptr::null()
            } else {
                payload.as_ptr()
            },
            len,
            offset: tidemark_offset { tx: id, op: 0 },
            has_offset: cbool(flag),
        };
        // What this message alone must give (None: it depends on the buffer's state).
        // (The length is checked first: a message above `capacity_bytes` is refused before
        // anything else of it is read.)
        let own = if len as u64 > self.capacity_bytes {
            Some(S::TooLarge)
        } else if flag > 1 {
            Some(S::InvalidArgument)
        } else {
            None
        };
        if flag == 1 && m.lie.is_none() {
            self.payloads.insert(id, payload.clone());
        }
        store.push(payload);
        (msg, own)
    }

    /// What a push of a message of `len` bytes gives now, given the buffer's counts.
    fn admit(&self, len: u64, queued: (u64, u64)) -> S {
        if len > self.capacity_bytes {
            S::TooLarge
        } else if self.stopping {
            S::Stopping // (or CLOSED once the stop finished; see the callers)
        } else if queued.0 + 1 > self.capacity_messages || queued.1 + len > self.capacity_bytes {
            S::Full
        } else {
            S::Ok
        }
    }

    fn buffer_op(&mut self, op: &Op) {
        let mut slot = [0u64; 8];
        match *op {
            Op::Push(m) => {
                let mut store = Vec::new();
                let (msg, own) = self.msg(m, &mut store);
                // SAFETY: a live buffer; `msg.data` is readable for `msg.len` bytes unless
                // the length lies above `capacity_bytes` (refused before any byte is read).
                let s = unsafe { tidemark_batch_buffer_try_push(self.b, &msg) };
                let mut want = own.unwrap_or_else(|| self.admit(msg.len as u64, self.queued));
                if want == S::Stopping && s == S::Closed {
                    want = S::Closed;
                }
                assert_eq!(
                    s, want,
                    "try_push of {} bytes (flag {:?})",
                    msg.len, msg.has_offset
                );
                if s == S::Ok {
                    self.queued.0 += 1;
                    self.queued.1 += msg.len as u64;
                    self.accepted += 1;
                }
            }
            Op::PushMany(ref msgs, p) => {
                let mut store = Vec::new();
                let mut list = Vec::new();
                let mut own = Vec::new();
                for &m in msgs.iter().take(8) {
                    let (msg, o) = self.msg(m, &mut store);
                    list.push(msg);
                    own.push(o);
                }
                let mut accepted = usize::MAX;
                let mut refusal = S::Panic;
                let ap: *mut usize = match p {
                    Ptr::Valid => &mut accepted,
                    _ => out_ptr(p, &mut slot),
                };
                // SAFETY: a live buffer; `list` holds `list.len()` messages, each readable
                // for its length unless that length lies above `capacity_bytes`; out pointers
                // NULL, misaligned or writable.
                let s = unsafe {
                    tidemark_batch_buffer_push_many(
                        self.b,
                        list.as_ptr(),
                        list.len(),
                        ap,
                        &mut refusal,
                    )
                };
                if let Some(want) = ptr_status(p) {
                    assert_eq!(s, want, "push_many with a {p:?} out pointer");
                    return;
                }
                // Expected: the longest prefix that fits; the first one left gives the reason.
                let mut q = self.queued;
                let mut k = 0;
                let mut reason = S::Ok;
                for (msg, o) in list.iter().zip(&own) {
                    let r = match o {
                        Some(S::InvalidArgument) => S::InvalidArgument,
                        _ => self.admit(msg.len as u64, q),
                    };
                    if r != S::Ok {
                        reason = r;
                        break;
                    }
                    q = (q.0 + 1, q.1 + msg.len as u64);
                    k += 1;
                }
                // A bad flag byte may refuse the whole call (nothing taken), whatever the
                // message's length (the export validates flags while it scans the lengths).
                if s == S::InvalidArgument && list.iter().any(|m| m.has_offset.get().is_err()) {
                    return;
                }
                assert_eq!(s, S::Ok, "push_many");
                if reason == S::Stopping && refusal == S::Closed {
                    reason = S::Closed;
                }
                assert_eq!((accepted, refusal), (k, reason), "push_many of {:?}", own);
                self.queued = q;
                self.accepted += k as u64;
            }
            Op::PushPacked(ref msgs, tamper) => {
                let mut payload = Vec::new();
                let mut descs = Vec::new();
                let mut flags_ok = true;
                let mut pending = Vec::new();
                for &m in msgs.iter().take(8) {
                    let id = self.next_msg;
                    self.next_msg += 1;
                    let bytes: Vec<u8> = (0..m.len).map(|i| (id as u8).wrapping_add(i)).collect();
                    let flag = m.flag % 4;
                    flags_ok &= flag <= 1;
                    descs.push(tidemark_msg_desc {
                        len: bytes.len() as u64,
                        offset: tidemark_offset { tx: id, op: 0 },
                        has_offset: cbool(flag),
                    });
                    payload.extend_from_slice(&bytes);
                    pending.push((id, flag, bytes));
                }
                let lie = tamper % 3 == 1;
                let payload_len = payload.len() + usize::from(lie);
                payload.push(0); // so a lying length still points at readable memory
                let mut accepted = usize::MAX;
                let mut refusal = S::Panic;
                // SAFETY: a live buffer; `payload` readable for `payload_len` bytes; `descs`
                // readable; writable out values.
                let s = unsafe {
                    tidemark_batch_buffer_push_packed(
                        self.b,
                        payload.as_ptr(),
                        payload_len,
                        descs.as_ptr(),
                        descs.len(),
                        &mut accepted,
                        &mut refusal,
                    )
                };
                if lie || !flags_ok {
                    assert_eq!(s, S::InvalidArgument, "a malformed packed push");
                    assert_eq!(
                        (accepted, refusal),
                        (usize::MAX, S::Panic),
                        "nothing written"
                    );
                    return;
                }
                assert_eq!(s, S::Ok, "push_packed");
                let mut q = self.queued;
                let mut k = 0;
                let mut reason = S::Ok;
                for d in &descs {
                    let r = self.admit(d.len, q);
                    if r != S::Ok {
                        reason = r;
                        break;
                    }
                    q = (q.0 + 1, q.1 + d.len);
                    k += 1;
                }
                if reason == S::Stopping && refusal == S::Closed {
                    reason = S::Closed;
                }
                assert_eq!((accepted, refusal), (k, reason), "push_packed");
                for (id, flag, bytes) in pending.into_iter().take(k) {
                    if flag == 1 {
                        self.payloads.insert(id, bytes);
                    }
                }
                self.queued = q;
                self.accepted += k as u64;
            }
            Op::Poll(p) => {
                let mut batch: *mut tidemark_batch = ptr::null_mut();
                let mut wait = 0u64;
                let bp: *mut *mut tidemark_batch = match p {
                    Ptr::Valid => &mut batch,
                    _ => out_ptr(p, &mut slot),
                };
                // SAFETY: a live buffer; out pointers NULL, misaligned or writable.
                let s = unsafe { tidemark_batch_buffer_poll_batch(self.b, bp, &mut wait) };
                if let Some(want) = ptr_status(p) {
                    assert_eq!(s, want);
                    return;
                }
                assert!(
                    matches!(s, S::Ok | S::WouldBlock | S::Closed),
                    "poll_batch: {s:?}"
                );
                if s == S::Ok {
                    let held = self.read_batch(batch, 64);
                    self.held.push(held);
                }
            }
            Op::BatchAck(k) | Op::BatchNack(k, _) | Op::BatchFree(k) if self.held.is_empty() => {
                let _ = k;
            }
            Op::BatchAck(k) => {
                let h = self.held.remove(k as usize % self.held.len());
                // SAFETY: a live buffer and a live batch handle, consumed here.
                let s = unsafe { tidemark_batch_buffer_ack(self.b, h.batch) };
                assert!(matches!(s, S::Ok | S::NotInFlight), "ack: {s:?}");
                if s == S::Ok {
                    self.delivered += h.ids.len() as u64;
                    self.queued.0 -= h.ids.len() as u64;
                    self.queued.1 -= h.bytes;
                }
            }
            Op::BatchNack(k, requeue) => {
                let h = self.held.remove(k as usize % self.held.len());
                // SAFETY: a live buffer and a live batch handle, consumed here.
                let s = unsafe { tidemark_batch_buffer_nack(self.b, h.batch, requeue.into()) };
                assert!(matches!(s, S::Ok | S::NotInFlight), "nack: {s:?}");
                if s == S::Ok && !requeue {
                    self.failed += h.ids.len() as u64;
                    self.queued.0 -= h.ids.len() as u64;
                    self.queued.1 -= h.bytes;
                }
            }
            Op::BatchFree(k) => {
                let h = self.held.remove(k as usize % self.held.len());
                // SAFETY: a live batch handle, released here (it stays in flight).
                unsafe { tidemark_batch_free(h.batch) };
            }
            Op::BatchRead(k, cap) => {
                if let Some(h) = self.held.get(k as usize % self.held.len().max(1)) {
                    let batch = h.batch;
                    let again = self.read_batch(batch, usize::from(cap));
                    assert_eq!(again.ids, self.held[k as usize % self.held.len()].ids);
                }
            }
            Op::Flush0 => {
                // SAFETY: a live buffer.
                let s = unsafe { tidemark_batch_buffer_flush(self.b, 0) };
                assert!(
                    matches!(s, S::Ok | S::Timeout | S::Closed),
                    "flush(0): {s:?}"
                );
            }
            Op::BeginStop(ms) => {
                // SAFETY: a live buffer.
                let s = unsafe { tidemark_batch_buffer_begin_stop(self.b, u64::from(ms % 4)) };
                assert_eq!(s, S::Ok);
                self.stopping = true;
            }
            Op::PollStop => self.poll_stop(),
            Op::BufferStats => {
                let mut c = tidemark_batch_buffer_counters::default();
                // SAFETY: a live buffer and a writable counters struct.
                assert_eq!(
                    unsafe { tidemark_batch_buffer_stats(self.b, &mut c) },
                    S::Ok
                );
                assert_eq!(c.accepted, self.accepted);
                assert_eq!(c.delivered, self.delivered);
                assert_eq!(c.failed, self.failed);
            }
            Op::BadBuffer(call, h) => {
                let p = self.bad_handle(h, self.b, self.t.cast());
                let want = if matches!(h, Handle::Null) {
                    S::NullArgument
                } else {
                    S::InvalidHandle
                };
                let payload = [1u8; 4];
                let m = tidemark_message {
                    data: payload.as_ptr(),
                    len: 4,
                    offset: tidemark_offset { tx: 0, op: 0 },
                    has_offset: false.into(),
                };
                let mut batch: *mut tidemark_batch = ptr::null_mut();
                let mut report: *mut tidemark_stop_report = ptr::null_mut();
                let mut u = 0u64;
                let mut n = 0usize;
                // SAFETY: `p` is NULL or points to at least 8 readable bytes that the library
                // must refuse before use; the other pointers are valid.
                let s = unsafe {
                    match call % 8 {
                        0 => tidemark_batch_buffer_try_push(p, &m),
                        1 => tidemark_batch_buffer_push_many(p, &m, 1, &mut n, &mut S::Ok),
                        2 => tidemark_batch_buffer_poll_batch(p, &mut batch, &mut u),
                        3 => tidemark_batch_buffer_flush(p, 0),
                        4 => tidemark_batch_buffer_begin_stop(p, 0),
                        5 => tidemark_batch_buffer_poll_stop(p, &mut report),
                        6 => tidemark_batch_buffer_stats(
                            p,
                            &mut tidemark_batch_buffer_counters::default(),
                        ),
                        _ => tidemark_batch_info(p.cast(), MaybeUninit::uninit().as_mut_ptr()),
                    }
                };
                assert_eq!(s, want, "buffer call {} through a {h:?} handle", call % 8);
            }
            _ => unreachable!("not a buffer op"),
        }
    }

    /// Reads a batch through the ABI (info, message views with a `cap`-sized array, payload
    /// copy) and checks every message against what was pushed.
    fn read_batch(&mut self, batch: *mut tidemark_batch, cap: usize) -> Held {
        let mut info = MaybeUninit::<tidemark_batch_summary>::uninit();
        // SAFETY: a live batch handle and a writable summary.
        assert_eq!(
            unsafe { tidemark_batch_info(batch, info.as_mut_ptr()) },
            S::Ok
        );
        // SAFETY: written on OK.
        let info = unsafe { info.assume_init() };
        let cap = cap.min(64);
        let mut views = vec![
            tidemark_message {
                data: ptr::null(),
                len: 0,
                offset: tidemark_offset { tx: 0, op: 0 },
                has_offset: false.into(),
            };
            cap.max(info.len)
        ];
        let mut n = usize::MAX;
        // SAFETY: a live batch; `cap` writable messages; a writable usize.
        let s = unsafe { tidemark_batch_messages(batch, views.as_mut_ptr(), cap, &mut n) };
        if cap < info.len {
            assert_eq!(s, S::BufferTooSmall);
            // SAFETY: as above, with room for `info.len` messages.
            let s = unsafe { tidemark_batch_messages(batch, views.as_mut_ptr(), info.len, &mut n) };
            assert_eq!(s, S::Ok);
        } else {
            assert_eq!(s, S::Ok);
        }
        assert_eq!(n, info.len);
        let mut ids = Vec::new();
        let mut bytes = 0u64;
        let mut all = Vec::new();
        for v in &views[..n] {
            let data = if v.len == 0 {
                &[][..]
            } else {
                // SAFETY: a view into the live batch: `len` readable bytes.
                unsafe { std::slice::from_raw_parts(v.data, v.len) }
            };
            if v.has_offset.get() == Ok(true) {
                let want = self
                    .payloads
                    .get(&v.offset.tx)
                    .expect("a message that was pushed");
                assert_eq!(data, &want[..], "payload of message {}", v.offset.tx);
                ids.push(v.offset.tx);
            } else {
                ids.push(u64::MAX);
            }
            bytes += v.len as u64;
            all.extend_from_slice(data);
        }
        assert_eq!(bytes, info.bytes);
        // The borrowed whole-batch view agrees with the per-message views.
        let mut view = MaybeUninit::<tidemark_batch_view>::uninit();
        // SAFETY: a live batch handle and a writable view.
        assert_eq!(
            unsafe { tidemark_batch_get_view(batch, view.as_mut_ptr()) },
            S::Ok
        );
        // SAFETY: written on OK.
        let view = unsafe { view.assume_init() };
        assert_eq!((view.len, view.payload_len as u64), (info.len, info.bytes));
        // SAFETY: the view points into the live batch: `payload_len` bytes, `len` descriptors.
        let (vp, vd) = unsafe {
            (
                std::slice::from_raw_parts(view.payload, view.payload_len),
                std::slice::from_raw_parts(view.descs, view.len),
            )
        };
        assert_eq!(vp, &all[..], "the view's payload bytes");
        for (d, v) in vd.iter().zip(&views[..n]) {
            assert_eq!(d.len, v.len as u64);
            assert_eq!(d.has_offset.get(), v.has_offset.get());
            if v.has_offset.get() == Ok(true) {
                assert_eq!(d.offset.tx, v.offset.tx);
            }
        }
        // The one-copy read: too small first (when it can be), then exact.
        let mut dst = vec![0u8; all.len()];
        let mut written = usize::MAX;
        if !all.is_empty() {
            // SAFETY: a live batch; `all.len() - 1` writable bytes.
            let s = unsafe {
                tidemark_batch_copy_payloads(batch, dst.as_mut_ptr(), all.len() - 1, &mut written)
            };
            assert_eq!(s, S::BufferTooSmall);
        }
        // SAFETY: a live batch; `dst.len()` writable bytes (NULL allowed when 0).
        let dp = if dst.is_empty() {
            ptr::null_mut()
        } else {
            dst.as_mut_ptr()
        };
        let s = unsafe { tidemark_batch_copy_payloads(batch, dp, dst.len(), &mut written) };
        assert_eq!((s, written), (S::Ok, all.len()));
        assert_eq!(dst, all);
        Held { batch, ids, bytes }
    }

    /// `poll_stop` once; on `OK` the report is checked and kept.
    fn poll_stop(&mut self) {
        let mut report: *mut tidemark_stop_report = ptr::null_mut();
        // SAFETY: a live buffer and a writable pointer.
        let s = unsafe { tidemark_batch_buffer_poll_stop(self.b, &mut report) };
        assert!(matches!(s, S::Ok | S::WouldBlock), "poll_stop: {s:?}");
        if s == S::Ok {
            self.check_report(report);
            if self.report.is_null() {
                self.report = report;
            } else {
                // SAFETY: a report handle we own.
                unsafe { tidemark_stop_report_free(report) };
            }
        }
    }

    fn check_report(&self, report: *mut tidemark_stop_report) {
        let mut c = tidemark_stop_counts::default();
        // SAFETY: a live report and a writable counts struct.
        assert_eq!(
            unsafe { tidemark_stop_report_counts(report, &mut c) },
            S::Ok
        );
        assert_eq!(c.accepted, self.accepted);
        assert_eq!(
            c.accepted,
            c.delivered + c.failed + c.handed_back,
            "accounting"
        );
        assert!(c.delivered >= self.delivered && c.failed >= self.failed);
        // Page through the handed-back messages, 3 at a time.
        let mut start = 0usize;
        loop {
            let mut out = [tidemark_handed_back {
                message: tidemark_message {
                    data: ptr::null(),
                    len: 0,
                    offset: tidemark_offset { tx: 0, op: 0 },
                    has_offset: false.into(),
                },
                outcome_unknown: false,
            }; 3];
            let mut n = usize::MAX;
            // SAFETY: a live report; 3 writable entries; a writable usize.
            let s = unsafe {
                tidemark_stop_report_handed_back(report, start, out.as_mut_ptr(), 3, &mut n)
            };
            assert_eq!(s, S::Ok);
            for h in &out[..n] {
                let m = &h.message;
                if m.has_offset.get() == Ok(true) {
                    let data = if m.len == 0 {
                        &[][..]
                    } else {
                        // SAFETY: a view into the live report: `len` readable bytes.
                        unsafe { std::slice::from_raw_parts(m.data, m.len) }
                    };
                    assert_eq!(data, &self.payloads[&m.offset.tx][..]);
                }
            }
            start += n;
            if n < 3 {
                break;
            }
        }
        assert_eq!(start as u64, c.handed_back);
    }
}

fuzz_target!(|input: Input| {
    let mut options = MaybeUninit::<tidemark_tracker_options>::uninit();
    // SAFETY: a writable options struct.
    assert_eq!(
        unsafe { tidemark_tracker_options_default(options.as_mut_ptr()) },
        S::Ok
    );
    // SAFETY: written on OK.
    let mut options = unsafe { options.assume_init() };
    options.has_initial_ack = input.initial_ack.is_some().into();
    options.initial_ack = input.initial_ack.map_or(0, u64::from);
    options.stall_grace_ms = u64::from(input.grace);
    let max_writers = usize::from(input.max_writers % 24) + 1;
    options.max_writers = max_writers;
    let mut t: *mut tidemark_tracker = ptr::null_mut();
    // SAFETY: valid options and a writable pointer.
    assert_eq!(unsafe { tidemark_tracker_new(&options, &mut t) }, S::Ok);

    let mut config = tidemark_batch_config {
        max_messages: 0,
        max_bytes: 0,
        linger_us: 0,
        capacity_messages: 0,
        capacity_bytes: 0,
        max_inflight_batches: 0,
        link_tracker: ptr::null(),
        link_writer: 0,
    };
    // SAFETY: a writable config struct.
    assert_eq!(unsafe { tidemark_batch_config_default(&mut config) }, S::Ok);
    let (mm, mb, cm, cb, inflight) = input.config;
    config.max_messages = usize::from(mm % 6) + 1;
    config.max_bytes = u64::from(mb % 64) + 1;
    // Linger 0 (a batch is due at once) or an hour (never due by age in a run): no clock in
    // the decisions.
    config.linger_us = if mm & 0x80 != 0 { 3_600_000_000 } else { 0 };
    config.capacity_messages = config.max_messages + usize::from(cm % 8);
    config.capacity_bytes = config.max_bytes + u64::from(cb % 128);
    config.max_inflight_batches = usize::from(inflight % 3) + 1;
    let mut b: *mut tidemark_batch_buffer = ptr::null_mut();
    // SAFETY: a valid config and a writable pointer.
    assert_eq!(unsafe { tidemark_batch_buffer_new(&config, &mut b) }, S::Ok);

    let mut run = Run {
        t,
        b,
        fake: Box::new([0, 0]),
        m: ExactModel::new(input.initial_ack.map(u64::from), u64::from(input.grace)),
        ids: Vec::new(),
        registered: 0,
        max_writers,
        commits: Vec::new(),
        next_tx: input.initial_ack.map_or(1, |a| u64::from(a) + 1),
        now: 0,
        last_ack: input.initial_ack.map(u64::from),
        taken: Vec::new(),
        capacity_messages: config.capacity_messages as u64,
        capacity_bytes: config.capacity_bytes,
        next_msg: 0,
        payloads: HashMap::new(),
        queued: (0, 0),
        accepted: 0,
        delivered: 0,
        failed: 0,
        held: Vec::new(),
        stopping: false,
        report: ptr::null_mut(),
    };

    for op in input.ops.iter().take(256) {
        match op {
            Op::NewTracker {
                flag,
                initial_ack,
                expected,
                max,
            } => {
                let mut o = options;
                let flag = flag % 3;
                o.has_initial_ack = cbool(flag);
                o.initial_ack = *initial_ack;
                o.expected_writers = usize::from(*expected);
                o.max_writers = *max as usize;
                let want = if flag > 1
                    || o.max_writers == 0
                    || o.max_writers > u32::MAX as usize
                    || o.expected_writers > o.max_writers
                    || (flag == 1 && o.initial_ack == u64::MAX)
                {
                    S::InvalidArgument
                } else {
                    S::Ok
                };
                let mut nt: *mut tidemark_tracker = ptr::null_mut();
                // SAFETY: valid options and a writable pointer.
                let s = unsafe { tidemark_tracker_new(&o, &mut nt) };
                assert_eq!(s, want, "tracker_new({o:?})");
                // SAFETY: NULL or the handle just made, released once.
                unsafe { tidemark_tracker_free(nt) };
            }
            Op::Push(_)
            | Op::PushMany(..)
            | Op::PushPacked(..)
            | Op::Poll(_)
            | Op::BatchAck(_)
            | Op::BatchNack(..)
            | Op::BatchFree(_)
            | Op::BatchRead(..)
            | Op::Flush0
            | Op::BeginStop(_)
            | Op::PollStop
            | Op::BufferStats
            | Op::BadBuffer(..) => run.buffer_op(op),
            _ => {
                run.tracker_op(op);
                run.check();
            }
        }
    }

    // The end: no backlog left, the ack exact; then stop the buffer and account for all.
    let mut steps = 0;
    while run.has_backlog() {
        let mut more = false;
        // SAFETY: a live tracker and a writable bool.
        assert_eq!(
            unsafe { tidemark_tracker_run_backlog(run.t, &mut more) },
            S::Ok
        );
        steps += 1;
        assert!(steps < 100_000, "the backlog never ends");
    }
    run.check();
    // SAFETY: a live buffer.
    assert_eq!(unsafe { tidemark_batch_buffer_begin_stop(run.b, 0) }, S::Ok);
    run.stopping = true;
    let mut tries = 0;
    while run.report.is_null() {
        run.poll_stop();
        tries += 1;
        assert!(tries < 1000, "a stop at its deadline never finished");
        if run.report.is_null() {
            std::thread::sleep(std::time::Duration::from_micros(100));
        }
    }
    // Every handle released exactly once (LeakSanitizer checks the rest).
    for h in run.held.drain(..) {
        // SAFETY: batch handles we own, released once.
        unsafe { tidemark_batch_free(h.batch) };
    }
    // SAFETY: handles we own, each released once and not used again.
    unsafe {
        tidemark_stop_report_free(run.report);
        tidemark_batch_buffer_free(run.b);
        tidemark_tracker_free(run.t);
    }
});
