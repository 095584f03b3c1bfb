//! Memory per writer, measured with a counting global allocator (not criterion).
//!
//! - bytes per *registered* writer: 10⁶ writers registered on an empty tracker (goal ≤ 16), by
//!   the allocator and by `Tracker::memory_bytes()`;
//! - bytes per *pending* writer: 10⁵ of them sent one commit each, then 4 outstanding commits
//!   each (4 writers per commit), measured after the commits and again after a sweep absorbed
//!   the new stints into the sweep index; the reference algorithm alongside.
//!
//! `cargo bench -p tidemark-benches --bench memory`; with `-- --test` the counts are 10⁴ and 10³.
// The counting allocator needs a plain std atomic; the workspace clippy.toml forbids naming them
// outside core's sync facade, which is about core (loom), not about bench tooling.
#![allow(clippy::disallowed_types)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use tidemark::{Offset, Tracker, TrackerOptions, WriterId};
use tidemark_benches::workload::WRITERS_PER_COMMIT;
use tidemark_testkit::model::ElectricTracker;

/// Bytes currently allocated through the global allocator.
static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

/// Counts live bytes; delegates to the system allocator.
struct Counting;

// SAFETY: every method delegates to `System` with the caller's arguments unchanged, so
// `System`'s guarantees hold; the counter is a side effect that never touches the memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `GlobalAlloc::alloc`'s contract.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            // Relaxed: a statistic read by this single thread.
            ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `GlobalAlloc::alloc_zeroed`'s contract.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is; `ptr` was allocated by us (hence by `System`) with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `GlobalAlloc::realloc`'s contract.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            ALLOCATED.fetch_add(new_size, Ordering::Relaxed);
            ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocated() -> usize {
    ALLOCATED.load(Ordering::Relaxed)
}

fn per(bytes: usize, n: usize) -> f64 {
    bytes as f64 / n as f64
}

/// Registers `n` writers; returns the tracker, its ids and the allocation delta.
fn registered(n: usize, expected: usize) -> (Tracker, Vec<WriterId>, usize) {
    // The id vector is the bench's, not the tracker's: allocate it before the baseline.
    let mut ids = Vec::with_capacity(n);
    let before = allocated();
    let t = Tracker::new(TrackerOptions {
        expected_writers: expected,
        ..Default::default()
    })
    .expect("tracker");
    for _ in 0..n {
        ids.push(t.register().expect("register"));
    }
    let delta = allocated() - before;
    (t, ids, delta)
}

/// Commits `rounds` rounds; each round delivers one commit to each of `ids` (4 per commit).
fn commit_rounds(t: &Tracker, ids: &[WriterId], tx: &mut u64, rounds: usize) {
    for _ in 0..rounds {
        for chunk in ids.chunks(WRITERS_PER_COMMIT) {
            *tx += 1;
            t.commit(Offset::new(*tx, 0), chunk, 0).expect("commit");
        }
    }
}

fn main() {
    let test_mode = std::env::args().any(|a| a == "--test");
    let (n, p) = if test_mode {
        (10_000, 1_000)
    } else {
        (1_000_000, 100_000)
    };

    println!("Registered writers: {n}");
    println!();
    println!("| tracker | allocated bytes | bytes / registered writer | memory_bytes() / writer |");
    println!("| --- | --- | --- | --- |");
    for (label, expected) in [
        ("grown (expected_writers = 0)", 0),
        ("pre-sized (expected_writers = n)", n),
    ] {
        let (t, ids, delta) = registered(n, expected);
        println!(
            "| tidemark, {label} | {delta} | {:.1} | {:.1} |",
            per(delta, n),
            per(t.memory_bytes(), n)
        );
        drop((t, ids));
    }
    println!("| reference (no registration: writers exist only while pending) | 0 | 0 | – |");

    println!();
    println!("Pending writers: {p} of the {n} registered, 4 writers per commit");
    println!();
    println!(
        "| tracker | state | allocated delta | bytes / pending writer | memory_bytes() delta / writer |"
    );
    println!("| --- | --- | --- | --- | --- |");
    let (t, ids, _) = registered(n, n);
    let pend = &ids[..p];
    let before = allocated();
    let mb_before = t.memory_bytes();
    let mut tx = 0;
    let row = |state: &str, t: &Tracker| {
        let d = allocated() - before;
        println!(
            "| tidemark | {state} | {d} | {:.1} | {:.1} |",
            per(d, p),
            per(t.memory_bytes() - mb_before, p)
        );
    };
    commit_rounds(&t, pend, &mut tx, 1);
    row("1 outstanding commit each", &t);
    t.sweep(0);
    row("1 outstanding commit each, after a sweep", &t);
    commit_rounds(&t, pend, &mut tx, 3);
    row("4 outstanding commits each", &t);
    t.sweep(0);
    row("4 outstanding commits each, after a sweep", &t);
    drop(t);
    drop(ids);

    let keys: Vec<u64> = (0..p as u64).collect();
    let before = allocated();
    let mut r = ElectricTracker::<u64>::new();
    let mut tx = 0;
    for round in 1..=4 {
        for chunk in keys.chunks(WRITERS_PER_COMMIT) {
            tx += 1;
            r.commit(Offset::new(tx, 0), chunk);
        }
        if round == 1 || round == 4 {
            let d = allocated() - before;
            println!(
                "| reference | {round} outstanding commit{} each | {d} | {:.1} | – |",
                if round == 1 { "" } else { "s" },
                per(d, p)
            );
        }
    }
    assert_eq!(r.pending(), p);
}
