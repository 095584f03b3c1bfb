//! Worst case for one call (not criterion): a head pinned while 10⁶ deliveries queue behind
//! it, then released, then ordinary traffic.
//!
//! One writer receives commit 1 and does not report it; meanwhile 2.5·10⁵ commits go to the
//! other 15 writers (4 per commit) and none is reported, so 10⁶ owed deliveries queue behind
//! the head; then each of the 15 reports everything it was sent (15 calls: the deliveries are
//! done but still in the log, as compaction had only those calls to squeeze them). Then:
//!
//! - **budgeted, ordinary traffic**: the pinned writer reports, and the workload goes on; every
//!   call (commit or flush report) is timed until the backlog is gone and 10⁴ commits more.
//! - **budgeted, `run_backlog`**: the same release, then `run_backlog` until it returns false
//!   (a host's background thread): the time to finish the backlog.
//! - **unbudgeted**: the same with the budget set to `usize::MAX`: the release call drains all.
//!
//! Printed: p50 / p99 / max call time in each phase, the most deliveries one call examined
//! (the work counter), and the backlog's finish time against the unbudgeted drain.
//!
//! `cargo bench -p tidemark-benches --bench worst`; `-- --test` queues 10⁴ deliveries.

use std::hint::black_box;
use std::time::{Duration, Instant};

use tidemark::{Offset, Tracker};
use tidemark_benches::sink::{Sink, TidemarkSink, now_ms};
use tidemark_benches::workload::{WRITERS_PER_COMMIT, Workload};

/// Writers: index 0 is the pinned one; the others get the traffic.
const N: u32 = 16;
const SEED: u64 = 0x776f_7273_7421;

/// Per-call times of one phase.
#[derive(Default)]
struct Calls {
    ns: Vec<u64>,
}

impl Calls {
    #[inline]
    fn time<R>(&mut self, f: impl FnOnce() -> R) -> R {
        let start = Instant::now();
        let r = f();
        self.ns.push(start.elapsed().as_nanos() as u64);
        r
    }

    fn summary(&mut self) -> String {
        self.ns.sort_unstable();
        let q = |p: f64| self.ns[((self.ns.len() - 1) as f64 * p) as usize];
        let slow = self.ns.iter().filter(|&&ns| ns > 100_000).count();
        format!(
            "{} calls, p50 {:.2} µs, p99 {:.2} µs, max {:.1} µs, {slow} above 100 µs",
            self.ns.len(),
            q(0.5) as f64 / 1e3,
            q(0.99) as f64 / 1e3,
            *self.ns.last().unwrap() as f64 / 1e3
        )
    }
}

/// The §8 workload on writers 1..N after `base` (its commit i is tx `base + i + 1`).
struct Traffic {
    wl: Workload,
    base: u64,
}

impl Traffic {
    fn step(&mut self, s: &mut TidemarkSink, calls: &mut Calls) {
        let now = now_ms(self.base + self.wl.commits());
        let step = self.wl.step();
        let base = self.base;
        let shift = |o: Offset| Offset::new(o.tx + base, o.op);
        if let Some((offset, writers)) = step.flush {
            for w in writers {
                calls.time(|| s.flushed(w + 1, shift(offset), now));
            }
        }
        let ws = step.commit.1.map(|w| w + 1);
        calls.time(|| s.commit(shift(step.commit.0), &ws, now));
    }

    /// The exact ack: every commit up to 64 back is reported.
    fn exact(&self) -> u64 {
        self.base + self.wl.commits() - 64
    }
}

/// Builds the pinned state: the sink, the traffic to run after it, the growth phase's calls.
fn pinned(queued: u64, budget: usize) -> (TidemarkSink, Traffic, Calls) {
    let mut s = TidemarkSink::new(N);
    s.tracker().set_call_budget(budget);
    s.tracker()
        .commit(Offset::new(1, 0), &[s.id(0)], 0)
        .expect("commit");
    let mut picker = Workload::new(N - 1, SEED);
    let mut last = vec![Offset::ZERO; N as usize];
    let mut growth = Calls::default();
    let commits = queued / WRITERS_PER_COMMIT as u64;
    for _ in 0..commits {
        let (o, ws) = picker.next_commit();
        let o = Offset::new(o.tx + 1, o.op);
        let ws = ws.map(|w| w + 1);
        for &w in &ws {
            last[w as usize] = o;
        }
        growth.time(|| s.commit(o, &ws, now_ms(o.tx)));
    }
    for w in 1..N {
        if last[w as usize] != Offset::ZERO {
            growth.time(|| s.flushed(w, last[w as usize], now_ms(commits)));
        }
    }
    assert_eq!(s.ack(), Some(0), "the pinned head holds the ack");
    let t = Traffic {
        wl: Workload::new(N - 1, SEED ^ 1),
        base: commits + 1,
    };
    (s, t, growth)
}

fn release(s: &mut TidemarkSink, calls: &mut Calls) {
    let now = now_ms(1 << 40);
    calls.time(|| s.flushed(0, Offset::new(1, 0), now));
}

fn check_exact(s: &TidemarkSink, t: &Traffic) {
    assert_eq!(
        s.ack(),
        Some(t.exact()),
        "the ack is exact once the backlog is gone"
    );
}

fn max_work(t: &Tracker) -> u64 {
    t.work_stats().max_call_work
}

fn main() {
    let test_mode = std::env::args().any(|a| a == "--test");
    let queued: u64 = if test_mode { 10_000 } else { 1_000_000 };
    let after = if test_mode { 1_000 } else { 10_000 };
    println!("Worst case: head pinned while {queued} deliveries queue behind it ({N} writers)");
    println!();

    // Budgeted, continued by ordinary traffic.
    let (mut s, mut t, mut growth) = pinned(queued, 1024);
    let grown = s.tracker().work_stats();
    let mut calls = Calls::default();
    let start = Instant::now();
    release(&mut s, &mut calls);
    let mut finished = None;
    let mut extra = 0;
    while extra < after {
        t.step(&mut s, &mut calls);
        if finished.is_none() && !s.tracker().has_backlog() {
            finished = Some((start.elapsed(), calls.ns.len()));
        }
        extra += finished.is_some() as u64;
    }
    let (traffic_finish, traffic_calls) = finished.expect("the backlog finished");
    check_exact(&s, &t);
    let w = s.tracker().work_stats();
    println!("budget 1 024 (default):");
    println!(
        "- growth ({} deliveries queued): {}; most deliveries one call examined: {}",
        grown.log_len,
        growth.summary(),
        grown.max_call_work
    );
    println!(
        "- release, then ordinary traffic: {}; most deliveries one call examined: {}; backlog \
         gone after {traffic_calls} calls, {:.1} ms",
        calls.summary(),
        w.max_call_work,
        traffic_finish.as_secs_f64() * 1e3
    );
    drop(s);

    // Budgeted, finished by run_backlog.
    let (mut s, t2, _) = pinned(queued, 1024);
    let mut calls = Calls::default();
    let start = Instant::now();
    release(&mut s, &mut calls);
    let mut steps = 0u64;
    while calls.time(|| s.tracker().run_backlog()) {
        steps += 1;
    }
    let budgeted = start.elapsed();
    assert!(max_work(s.tracker()) <= 1024);
    assert_eq!(
        s.ack(),
        Some(t2.base),
        "every commit is done after the backlog"
    );
    black_box(s.ack());
    println!(
        "- release, then run_backlog until done: {steps} steps, {:.1} ms in all; {}",
        budgeted.as_secs_f64() * 1e3,
        calls.summary()
    );
    drop(s);

    // Unbudgeted.
    let (mut s, mut t, mut growth) = pinned(queued, usize::MAX);
    let grown = s.tracker().work_stats();
    let mut calls = Calls::default();
    release(&mut s, &mut calls);
    let unbudgeted = Duration::from_nanos(calls.ns[0]);
    assert!(!s.tracker().has_backlog());
    for _ in 0..after {
        t.step(&mut s, &mut calls);
    }
    check_exact(&s, &t);
    println!();
    println!("budget usize::MAX (unbudgeted):");
    println!(
        "- growth: {}; most deliveries one call examined: {}",
        growth.summary(),
        grown.max_call_work
    );
    println!(
        "- the release call drained everything: {:.1} ms ({} deliveries examined)",
        unbudgeted.as_secs_f64() * 1e3,
        max_work(s.tracker())
    );
    println!();
    println!(
        "backlog finish, budgeted (run_backlog) / unbudgeted drain: {:.2}",
        budgeted.as_secs_f64() / unbudgeted.as_secs_f64()
    );
}
