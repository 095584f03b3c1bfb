//! The delivery log: every delivery `(entry, tag, offset)` in commit order, in a linked list of
//! fixed-size chunks. One producer (the committer, under the commit lock) appends at the tail;
//! one consumer (the holder of the drain token, `drain.rs`) pops at the head and compacts.
//!
//! - **No copying, no scan of the whole log**: growth links a new chunk; the consumer frees a
//!   chunk once it has popped past it. No call touches more than one chunk's worth of entries
//!   for compaction (the budget of `drain.rs` bounds the rest).
//! - **Publication** (edge L1): the producer writes slots, then stores the chunk's `len` with
//!   `Release`; the consumer loads `len` with `Acquire` before reading slots. A chunk is
//!   *sealed* once the producer linked its successor (`next`, `Release`, after storing the
//!   final `len`); the producer never touches a sealed chunk again, so the consumer owns it.
//!   Sealing publishes a chunk before the commit that filled it finishes; that is harmless:
//!   a prefix of a commit's deliveries can only hold the ack lower (`last_seen` moves after
//!   the whole commit is published).
//! - **Compaction** runs over sealed chunks after the head chunk: it drops deliveries that are
//!   done, keeping order, frees emptied chunks and merges sparse neighbours, one chunk per step.
//!   So memory follows *unflushed* deliveries even while a pinned head keeps the ack still.
//! - **Reclamation**: a chunk is freed only by the consumer, only once sealed and unreachable
//!   from the head; the producer holds only the unsealed tail. Nothing else reads chunks, so no
//!   epoch scheme is needed.

use std::ptr::NonNull;

use super::seg::AllocFailed;
use crate::Offset;
use crate::sync::{
    AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, CachePadded, Ordering, UnsafeCell, Zeroable,
    alloc_zeroed_slice, free_zeroed_slice,
};

/// Deliveries per chunk (3 KiB). Under loom: 2, so models cross chunk boundaries.
pub(super) const CHUNK: usize = if crate::sync::LOOM { 2 } else { 128 };

/// Below this many deliveries the log is never compacted.
const MIN_COMPACT: u64 = if crate::sync::LOOM { 2 } else { 8192 };

/// One delivery of a commit to a writer's stint: 24 bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Delivery {
    pub(super) entry: u32,
    pub(super) tag: u32,
    pub(super) offset: Offset,
}

struct Chunk {
    /// Slots `0..len` hold deliveries. The producer raises it (Release); for a sealed chunk
    /// the consumer may lower it while compacting.
    len: AtomicUsize,
    /// The next chunk, null until the producer seals this one.
    next: AtomicPtr<Chunk>,
    slots: [UnsafeCell<Delivery>; CHUNK],
}

impl Default for Chunk {
    fn default() -> Self {
        Chunk {
            len: AtomicUsize::new(0),
            next: AtomicPtr::new(std::ptr::null_mut()),
            slots: std::array::from_fn(|_| UnsafeCell::new(Delivery::default())),
        }
    }
}

// SAFETY: outside loom every field is valid all-zero (a zero length, a null link, deliveries
// of plain integers in a transparent cell) and equals `Default`; the loom build constructs
// chunks with `Default` instead (see `alloc_zeroed_slice`).
unsafe impl Zeroable for Chunk {}

impl Chunk {
    /// A fresh chunk (one allocation), or `AllocFailed` when the allocator refuses: never an
    /// abort.
    fn alloc() -> Result<NonNull<Chunk>, AllocFailed> {
        let raw = alloc_zeroed_slice::<Chunk>(1).ok_or(AllocFailed {
            bytes: std::mem::size_of::<Chunk>(),
        })?;
        Ok(NonNull::new(raw).expect("allocations are not null"))
    }

    /// # Safety
    ///
    /// `chunk` came from [`Chunk::alloc`], is unreachable from the log and from every
    /// `Producer`/`Consumer`, and is freed once.
    unsafe fn free(chunk: NonNull<Chunk>) {
        // SAFETY: per the contract, we own the one-element allocation made in `alloc`.
        unsafe { free_zeroed_slice(chunk.as_ptr(), 1) };
    }

    #[inline]
    fn read(&self, i: usize) -> Delivery {
        // SAFETY: a reader reads slot `i < len`, written before `len` was published
        // (Release/Acquire, edge L1); it is rewritten only by the consumer during compaction,
        // which is the reader of sealed chunks.
        self.slots[i].with(|p| unsafe { *p })
    }

    #[inline]
    fn write(&self, i: usize, d: Delivery) {
        // SAFETY: the writer owns slot `i`: the producer writes slots at or above the
        // published `len` of the unsealed tail, which no reader touches yet; the consumer
        // writes slots of sealed chunks, which only it can reach.
        self.slots[i].with_mut(|p| unsafe { *p = d });
    }
}

/// Counters shared by both halves.
pub(super) struct LogShared {
    /// Deliveries appended (producer only).
    pub(super) appended: CachePadded<AtomicU64>,
    /// Deliveries popped or compacted away (consumer only).
    pub(super) dropped: CachePadded<AtomicU64>,
    /// Log length above which the producer asks for a compaction pass (consumer only).
    compact_at: AtomicU64,
    /// A compaction pass is under way (consumer only).
    compacting: AtomicBool,
    /// Chunks allocated (producer adds, consumer subtracts).
    chunks: AtomicU64,
    /// One emptied chunk handed back by the consumer for the producer's next growth (null
    /// when none), so a steady log allocates nothing.
    recycled: AtomicPtr<Chunk>,
}

impl LogShared {
    /// Deliveries in the log now (a snapshot).
    pub(super) fn len(&self) -> u64 {
        // Relaxed: statistics and a trigger; read `dropped` first so the difference never
        // goes negative.
        let dropped = self.dropped.load(Ordering::Relaxed);
        self.appended
            .load(Ordering::Relaxed)
            .saturating_sub(dropped)
    }

    /// Should the producer drive a compaction step?
    pub(super) fn wants_compaction(&self) -> bool {
        // Relaxed: a heuristic trigger; a stale value costs one step early or late.
        self.compacting.load(Ordering::Relaxed)
            || self.len() > self.compact_at.load(Ordering::Relaxed)
    }

    /// Bytes held by chunks.
    pub(super) fn allocated_bytes(&self) -> usize {
        // Relaxed: a statistic.
        self.chunks.load(Ordering::Relaxed) as usize * std::mem::size_of::<Chunk>()
    }
}

/// Builds an empty log: its shared counters and its two halves, which share one chunk.
pub(super) fn new() -> Result<(LogShared, Producer, Consumer), AllocFailed> {
    let first = Chunk::alloc()?;
    let shared = LogShared {
        appended: CachePadded::new(AtomicU64::new(0)),
        dropped: CachePadded::new(AtomicU64::new(0)),
        compact_at: AtomicU64::new(MIN_COMPACT),
        compacting: AtomicBool::new(false),
        chunks: AtomicU64::new(1),
        recycled: AtomicPtr::new(std::ptr::null_mut()),
    };
    Ok((
        shared,
        Producer {
            tail: first,
            len: 0,
            spare: Vec::new(),
        },
        Consumer {
            head: first,
            idx: 0,
            cursor: None,
            pos: 0,
            live: 0,
        },
    ))
}

/// The producer half (owned by the committer).
pub(super) struct Producer {
    tail: NonNull<Chunk>,
    /// Slots written in the tail chunk (published or not).
    len: usize,
    /// Chunks allocated ahead by `reserve`, used in order.
    spare: Vec<NonNull<Chunk>>,
}

// SAFETY: the producer only touches its unsealed tail chunk (and spare chunks nobody else can
// reach); it may move between threads with the committer state that owns it.
unsafe impl Send for Producer {}

impl Producer {
    /// Makes room for `n` more deliveries without allocating in `push` (so a commit either
    /// fails before it changes anything or cannot fail).
    pub(super) fn reserve(&mut self, n: usize, shared: &LogShared) -> Result<(), AllocFailed> {
        let room = CHUNK - self.len + self.spare.len() * CHUNK;
        for _ in 0..n.saturating_sub(room).div_ceil(CHUNK) {
            // Acquire: pairs with the consumer's Release in `retire`: its last reads of the
            // chunk happened before we reuse it.
            let chunk = match NonNull::new(
                shared
                    .recycled
                    .swap(std::ptr::null_mut(), Ordering::Acquire),
            ) {
                Some(c) => {
                    // SAFETY: a recycled chunk is unreachable from the log; we own it now.
                    let r = unsafe { c.as_ref() };
                    // Relaxed: published with the link that makes it reachable again.
                    r.len.store(0, Ordering::Relaxed);
                    r.next.store(std::ptr::null_mut(), Ordering::Relaxed);
                    c
                }
                None => {
                    let c = Chunk::alloc()?;
                    // Relaxed: a statistic.
                    shared.chunks.fetch_add(1, Ordering::Relaxed);
                    c
                }
            };
            self.spare.push(chunk);
        }
        Ok(())
    }

    /// Appends one delivery (unpublished until [`publish`](Self::publish)). Room must have been
    /// reserved.
    #[inline]
    pub(super) fn push(&mut self, d: Delivery) {
        if self.len == CHUNK {
            let next = self.spare.remove(0);
            // SAFETY: the tail chunk stays allocated while unsealed (the consumer frees only
            // sealed chunks), and we are its only writer.
            let tail = unsafe { self.tail.as_ref() };
            // Release (L1): the final length, before the link that seals the chunk.
            tail.len.store(CHUNK, Ordering::Release);
            // Release: the consumer that sees the link sees the final length and the slots.
            tail.next.store(next.as_ptr(), Ordering::Release);
            self.tail = next;
            self.len = 0;
        }
        // SAFETY: as above; slot `len` is beyond the published length.
        unsafe { self.tail.as_ref() }.write(self.len, d);
        self.len += 1;
    }

    /// Publishes every pushed delivery to the consumer.
    #[inline]
    pub(super) fn publish(&mut self, pushed: u64, shared: &LogShared) {
        // SAFETY: see `push`.
        let tail = unsafe { self.tail.as_ref() };
        // Release (L1): slots written before it are visible to a consumer that sees the length.
        tail.len.store(self.len, Ordering::Release);
        // Relaxed: statistics and the compaction trigger; only we write it.
        let appended = shared.appended.load(Ordering::Relaxed);
        shared.appended.store(appended + pushed, Ordering::Relaxed);
    }
}

/// The consumer half (owned by the drain-token holder).
pub(super) struct Consumer {
    head: NonNull<Chunk>,
    idx: usize,
    /// The compaction pass in progress: the chunk *before* the one being walked, the position
    /// in that chunk, and the live deliveries found in it so far.
    cursor: Option<NonNull<Chunk>>,
    pos: usize,
    live: usize,
}

// SAFETY: the consumer touches the head chunk and sealed chunks only, which nobody else reads;
// it moves between threads with the drain token.
unsafe impl Send for Consumer {}

/// What one compaction step did.
pub(super) enum Compacted {
    /// Examined (or moved) this many deliveries; the pass continues.
    Scanned(usize),
    /// The pass reached the unsealed tail and ended.
    PassDone,
}

/// Hands an emptied chunk to the producer for reuse, or frees it if one is waiting already.
///
/// # Safety
///
/// `chunk` is unreachable from the log and from both halves, and retired once.
unsafe fn retire(shared: &LogShared, chunk: NonNull<Chunk>) {
    // Release: our reads of the chunk happen before the producer reuses it (its Acquire swap).
    if shared
        .recycled
        .compare_exchange(
            std::ptr::null_mut(),
            chunk.as_ptr(),
            Ordering::Release,
            Ordering::Relaxed,
        )
        .is_err()
    {
        // SAFETY: per the contract, the chunk is ours alone.
        unsafe { Chunk::free(chunk) };
        // Relaxed: a statistic.
        shared.chunks.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `counter += n` for a counter only the consumer writes.
fn add(counter: &AtomicU64, n: u64) {
    if n > 0 {
        // Relaxed: statistics and the compaction trigger; a single writer.
        let v = counter.load(Ordering::Relaxed);
        counter.store(v + n, Ordering::Relaxed);
    }
}

impl Consumer {
    /// The oldest delivery not yet popped, if any is published.
    #[inline]
    pub(super) fn peek(&mut self, shared: &LogShared) -> Option<Delivery> {
        loop {
            // SAFETY: the head chunk is allocated: only we free chunks, and never the head.
            let head = unsafe { self.head.as_ref() };
            // Acquire (L1): slots below the length are visible.
            if self.idx < head.len.load(Ordering::Acquire) {
                return Some(head.read(self.idx));
            }
            // Acquire: the link is stored after the final length.
            let next = NonNull::new(head.next.load(Ordering::Acquire))?;
            if self.idx < head.len.load(Ordering::Acquire) {
                continue; // the producer filled the chunk before sealing it
            }
            let old = self.head;
            self.head = next;
            self.idx = 0;
            if self.cursor == Some(old) {
                // The walk was in the chunk after `old`, now the head: restart it after that.
                self.cursor = Some(next);
                self.pos = 0;
                self.live = 0;
            }
            // SAFETY: `old` is sealed and fully popped; the head moved past it, the producer
            // is done with it, and the compaction cursor no longer names it.
            unsafe { retire(shared, old) };
        }
    }

    /// Drops the delivery `peek` returned. The caller counts what it popped with
    /// [`dropped`](Self::dropped) (tombstones excluded: compaction counted them).
    #[inline]
    pub(super) fn pop(&mut self) {
        self.idx += 1;
    }

    /// Counts `n` popped deliveries as gone from the log.
    #[inline]
    pub(super) fn dropped(&self, shared: &LogShared, n: u64) {
        add(&shared.dropped, n);
    }

    /// One compaction step of at most `budget` deliveries: walks the next sealed chunk of the
    /// pass, turning done deliveries into tombstones (tag 0, which the drain pops as done), so
    /// the chunk is consistent after every step and a pass may stop anywhere. A chunk walked to
    /// its end is freed when nothing in it is live, or its live deliveries move into the chunk
    /// before it when they fit there and in the budget, or else to its own front (order is kept
    /// every time).
    pub(super) fn compact_step(
        &mut self,
        shared: &LogShared,
        budget: usize,
        mut done: impl FnMut(&Delivery) -> bool,
    ) -> Compacted {
        let prev = *self.cursor.get_or_insert(self.head);
        // Relaxed: a flag only we write.
        shared.compacting.store(true, Ordering::Relaxed);
        // SAFETY: `prev` is the head chunk or a sealed chunk after it; we never free a chunk
        // the cursor names (see `peek` and below).
        let prev_ref = unsafe { prev.as_ref() };
        // Acquire: see the producer's link and, through it, the chunk's contents.
        let Some(cur) = NonNull::new(prev_ref.next.load(Ordering::Acquire)) else {
            return self.finish_pass(shared);
        };
        // SAFETY: reachable from the cursor, hence allocated.
        let cur_ref = unsafe { cur.as_ref() };
        // Acquire: a null link means `cur` is the producer's tail: the pass ends there.
        let Some(next) = NonNull::new(cur_ref.next.load(Ordering::Acquire)) else {
            return self.finish_pass(shared);
        };
        // Acquire (L1): the final length of a sealed chunk.
        let len = cur_ref.len.load(Ordering::Acquire);
        let mut work = 0;
        let mut dropped = 0;
        while self.pos < len && work < budget {
            let d = cur_ref.read(self.pos);
            if d.tag != 0 {
                if done(&d) {
                    cur_ref.write(self.pos, Delivery::default());
                    dropped += 1;
                } else {
                    self.live += 1;
                }
            }
            self.pos += 1;
            work += 1;
        }
        add(&shared.dropped, dropped);
        if self.pos < len {
            return Compacted::Scanned(work);
        }
        let prev_len = prev_ref.len.load(Ordering::Relaxed);
        let fits = prev != self.head && prev_len + self.live <= CHUNK;
        if self.live == 0 || (fits && work + self.live <= budget) {
            let mut at = prev_len;
            for i in 0..len {
                let d = cur_ref.read(i);
                if d.tag != 0 {
                    prev_ref.write(at, d);
                    at += 1;
                }
            }
            work += self.live;
            // Relaxed: `prev` is sealed (or the head, when nothing moved); only we use it.
            prev_ref.len.store(at, Ordering::Relaxed);
            // Release: consistent with the producer's links (only we read this one now).
            prev_ref.next.store(next.as_ptr(), Ordering::Release);
            // SAFETY: `cur` is sealed and now unlinked; the cursor names `prev`, the head is
            // `prev` or before it.
            unsafe { retire(shared, cur) };
        } else {
            if self.live < len && work + self.live <= budget {
                // Squeeze the tombstones out, so a later chunk can merge into this one.
                let mut at = 0;
                for i in 0..len {
                    let d = cur_ref.read(i);
                    if d.tag != 0 {
                        cur_ref.write(at, d);
                        at += 1;
                    }
                }
                work += self.live;
                // Relaxed: `cur` is sealed; only we use it.
                cur_ref.len.store(at, Ordering::Relaxed);
            }
            self.cursor = Some(cur);
        }
        self.pos = 0;
        self.live = 0;
        Compacted::Scanned(work)
    }

    fn finish_pass(&mut self, shared: &LogShared) -> Compacted {
        self.cursor = None;
        self.pos = 0;
        self.live = 0;
        // Relaxed: trigger state only we write; the producer reads it as a heuristic.
        shared
            .compact_at
            .store((2 * shared.len()).max(MIN_COMPACT), Ordering::Relaxed);
        shared.compacting.store(false, Ordering::Relaxed);
        Compacted::PassDone
    }

    /// Frees every chunk. Called once, from the tracker's `Drop`, with the producer gone.
    pub(super) fn free_all(&mut self, producer: &mut Producer, shared: &LogShared) {
        if let Some(c) = NonNull::new(
            shared
                .recycled
                .swap(std::ptr::null_mut(), Ordering::Relaxed),
        ) {
            // SAFETY: exclusive access (drop); the recycled chunk is reachable only here.
            unsafe { Chunk::free(c) };
        }
        let mut c = Some(self.head);
        while let Some(chunk) = c {
            // SAFETY: exclusive access (drop); each chunk is reachable once along the list.
            let next = unsafe { chunk.as_ref() }.next.load(Ordering::Relaxed);
            // SAFETY: as above; freed once.
            unsafe { Chunk::free(chunk) };
            c = NonNull::new(next);
        }
        for spare in producer.spare.drain(..) {
            // SAFETY: spare chunks were never linked; each is freed once.
            unsafe { Chunk::free(spare) };
        }
    }
}

#[cfg(all(test, not(tidemark_loom)))]
mod tests {
    use super::*;

    fn d(i: u64) -> Delivery {
        Delivery {
            entry: i as u32,
            tag: 1,
            offset: Offset::new(i, 0),
        }
    }

    fn drain_all(c: &mut Consumer, s: &LogShared) -> Vec<u64> {
        let mut out = Vec::new();
        while let Some(x) = c.peek(s) {
            if x.tag != 0 {
                out.push(x.offset.tx);
                c.dropped(s, 1);
            }
            c.pop();
        }
        out
    }

    #[test]
    fn fifo_across_chunks_and_publication() {
        let (s, mut p, mut c) = new().unwrap();
        p.reserve(1, &s).unwrap();
        p.push(d(0));
        assert_eq!(c.peek(&s), None, "nothing published yet");
        p.publish(1, &s);
        assert_eq!(drain_all(&mut c, &s), vec![0]);
        // Sealing a chunk publishes it early: harmless, a prefix of a commit's deliveries
        // only holds the ack lower.
        let n = CHUNK * 3 + 7;
        p.reserve(n, &s).unwrap();
        for i in 0..n as u64 {
            p.push(d(i));
        }
        p.publish(n as u64, &s);
        assert_eq!(drain_all(&mut c, &s), (0..n as u64).collect::<Vec<_>>());
        assert_eq!(s.len(), 0);
        assert!(
            s.chunks.load(Ordering::Relaxed) <= 2,
            "popped chunks are freed (one kept for reuse)"
        );
        c.free_all(&mut p, &s);
    }

    #[test]
    fn compaction_keeps_order_frees_and_merges() {
        let (s, mut p, mut c) = new().unwrap();
        let n = CHUNK * 6;
        p.reserve(n, &s).unwrap();
        for i in 0..n as u64 {
            p.push(d(i));
        }
        p.publish(n as u64, &s);
        // Keep every 100th delivery and the whole first chunk (the head is not compacted).
        let keep = |x: &Delivery| x.offset.tx < CHUNK as u64 || x.offset.tx % 100 == 0;
        let budget = 50; // steps stop mid-chunk
        let mut examined = 0;
        while let Compacted::Scanned(k) = c.compact_step(&s, budget, |x| !keep(x)) {
            assert!(k <= budget);
            examined += k;
        }
        assert!(
            (4 * CHUNK..=4 * CHUNK + 3 * 2).contains(&examined),
            "only the four sealed chunks after the head are walked: {examined}"
        );
        let want: Vec<u64> = (0..n as u64)
            .filter(|&i| i < CHUNK as u64 || i >= (5 * CHUNK) as u64 || i % 100 == 0)
            .collect();
        assert!(
            s.chunks.load(Ordering::Relaxed) <= 4,
            "sparse chunks were merged (one kept for reuse)"
        );
        assert_eq!(s.len(), want.len() as u64);
        assert_eq!(drain_all(&mut c, &s), want);
        c.free_all(&mut p, &s);
    }
}
