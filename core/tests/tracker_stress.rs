//! Concurrent stress tests on std threads, with an independent checker. Every flush report,
//! removal and commit takes a stamp from a SeqCst counter *before* the call; every ack read takes
//! one *after* the load. A delivery is done at the earliest stamp of a report or removal that
//! covered it; a commit is done when its call and all of its deliveries are. Afterwards the
//! checker proves, for every read `(ack, stamp)`, that each commit with `tx <= ack` was done
//! before that read (so the ack never passed an unflushed commit), and that the final ack equals
//! the last commit's tx.
//!
//! - `ack_never_passes_an_unflushed_commit_under_concurrency`: 1 committer, 3 flushers and an
//!   ack reader, 10⁶ commits, default call budget.
//! - `eight_threads_with_removals_sweeps_and_small_budget`: 1 committer, 3 flushers, a remover,
//!   a sweeper (sweeps, events, pinning, stats, backlog steps) and 2 ack readers, with a call
//!   budget of 8 deliveries so releases leave backlogs that every kind of call continues.
//!   A removal is credited to every delivery whose commit was listed before the removal
//!   returned (a superset of the deliveries it really covered, so a commit racing the removal
//!   can only make the check weaker, never fail it falsely).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;

use tidemark::{Offset, Tracker, TrackerOptions, WriterId};

const WRITERS: usize = 96;
const FLUSHERS: usize = 3;

fn commits(default: usize) -> usize {
    std::env::var("TIDEMARK_STRESS_COMMITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One stress configuration.
struct Config {
    commits: usize,
    /// Writers `WRITERS - removable ..` are also removed, now and then, by a remover thread.
    removable: usize,
    sweeper: bool,
    readers: usize,
    budget: Option<usize>,
}

struct Shared {
    tracker: Tracker,
    clock: AtomicU64,
    /// Per delivery: the earliest stamp of a report or removal that covered it.
    done_at: Vec<AtomicU64>,
    /// Per removable writer: the deliveries listed by the committer since its last removal.
    listed: Vec<Mutex<Vec<usize>>>,
    stop: AtomicBool,
}

impl Shared {
    fn stamp(&self) -> u64 {
        // SeqCst: the stamps form one total order consistent with happens-before.
        self.clock.fetch_add(1, Ordering::SeqCst) + 1
    }
    fn claim(&self, delivery: usize, stamp: u64) {
        self.done_at[delivery].fetch_min(stamp, Ordering::SeqCst);
    }
    fn read_ack(&self, log: &mut Vec<(Option<u64>, u64)>) {
        let ack = self.tracker.ack();
        let stamp = self.stamp();
        log.push((ack, stamp));
    }
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }
}

#[derive(Clone, Copy)]
struct Delivery {
    id: usize,
    writer: usize,
    offset: Offset,
}

fn flusher(
    shared: Arc<Shared>,
    ids: Vec<WriterId>,
    rx: mpsc::Receiver<Delivery>,
    seed: u64,
) -> (Vec<(Option<u64>, u64)>, u64) {
    let mut rng = Rng(seed);
    let mut queues: Vec<VecDeque<Delivery>> = vec![VecDeque::new(); WRITERS];
    let mut mine: Vec<usize> = Vec::new();
    let mut reads = Vec::new();
    let mut reports = 0u64;
    let mut report =
        |shared: &Shared, queues: &mut Vec<VecDeque<Delivery>>, w: usize, rng: &mut Rng| {
            let q = &mut queues[w];
            if q.is_empty() {
                return;
            }
            let k = rng.below(q.len() as u64) as usize; // report up to delivery k
            let target = q[k];
            let partial = rng.below(4) == 0;
            let offset = if partial {
                Offset::new(target.offset.tx, target.offset.op - 1) // covers deliveries before k only
            } else {
                target.offset
            };
            let covered = if partial { k } else { k + 1 };
            let stamp = shared.stamp();
            for d in q.drain(..covered) {
                shared.claim(d.id, stamp);
            }
            shared
                .tracker
                .flushed(ids[w], offset, stamp)
                .expect("writer is registered");
            reports += 1;
            if rng.below(8) == 0 {
                // A late, lower report: must change nothing.
                let low = Offset::new(offset.tx.saturating_sub(50), 0);
                shared.tracker.flushed(ids[w], low, stamp).unwrap();
                reports += 1;
            }
        };
    loop {
        match rx.try_recv() {
            Ok(d) => {
                if queues[d.writer].is_empty() {
                    mine.push(d.writer);
                }
                queues[d.writer].push_back(d);
            }
            Err(mpsc::TryRecvError::Empty) => thread::yield_now(),
            Err(mpsc::TryRecvError::Disconnected) => break,
        }
        if !mine.is_empty() && rng.below(3) == 0 {
            let i = rng.below(mine.len() as u64) as usize;
            let w = mine[i];
            report(&shared, &mut queues, w, &mut rng);
            if queues[w].is_empty() {
                mine.swap_remove(i);
            }
        }
        if rng.below(16) == 0 {
            shared.read_ack(&mut reads);
        }
    }
    // Drain: report everything still owed.
    for w in 0..WRITERS {
        if let Some(last) = queues[w].back().copied() {
            let stamp = shared.stamp();
            for d in queues[w].drain(..) {
                shared.claim(d.id, stamp);
            }
            shared.tracker.flushed(ids[w], last.offset, stamp).unwrap();
            reports += 1;
        }
    }
    (reads, reports)
}

/// Removes removable writers now and then: everything they owe counts as done.
fn remover(shared: Arc<Shared>, ids: Vec<WriterId>, seed: u64) -> u64 {
    let mut rng = Rng(seed);
    let first = WRITERS - shared.listed.len();
    let mut removals = 0;
    while !shared.stopped() {
        let r = rng.below(shared.listed.len() as u64) as usize;
        let stamp = shared.stamp();
        shared.tracker.remove(ids[first + r]).unwrap();
        removals += 1;
        // Every delivery whose commit the removal saw was listed before the commit call, so it
        // is in the list now (and so, possibly, are a few the removal did not cover).
        for d in shared.listed[r].lock().unwrap().drain(..) {
            shared.claim(d, stamp);
        }
        for _ in 0..rng.below(64) {
            thread::yield_now();
        }
    }
    removals
}

/// Sweeps (with a grace period nothing reaches), reads events, pinning and stats, and runs
/// backlog steps, concurrently with everything else.
fn sweeper(shared: Arc<Shared>) -> u64 {
    let mut sweeps = 0;
    let mut events = Vec::new();
    while !shared.stopped() {
        let now = shared.clock.load(Ordering::SeqCst);
        let outcome = shared.tracker.sweep(now);
        assert_eq!((outcome.evicted, outcome.challenged), (0, 0));
        shared.tracker.take_events(&mut events, 64);
        assert!(events.is_empty(), "{events:?}");
        let before = shared.tracker.ack();
        if let Some(p) = shared.tracker.pinning(now) {
            // The head it names owed its delivery at some point after `before` was read, so
            // that delivery is above `before` (the ack only grows, the head only moves up),
            // and the writer's flushed bound, read with it, does not cover it yet.
            assert!(
                before < Some(p.owes.tx),
                "{p:?} vs an earlier ack {before:?}"
            );
            assert!(p.flushed.is_none_or(|f| f < p.owes), "{p:?}");
        }
        let _ = shared.tracker.stats(now);
        shared.tracker.run_backlog();
        sweeps += 1;
        thread::yield_now();
    }
    sweeps
}

fn run(cfg: &Config) {
    let n = cfg.commits;
    // The plan: which writers each commit goes to (deliveries numbered in commit order).
    let mut rng = Rng(0xC0FF_EE00_D15E_A5E5);
    let mut plan: Vec<Vec<usize>> = Vec::with_capacity(n);
    for _ in 0..n {
        let mut chosen = Vec::with_capacity(4);
        for _ in 0..rng.below(5) {
            let w = rng.below(WRITERS as u64) as usize;
            if !chosen.contains(&w) {
                chosen.push(w);
            }
        }
        plan.push(chosen);
    }
    let deliveries: usize = plan.iter().map(Vec::len).sum();
    let shared = Arc::new(Shared {
        tracker: Tracker::new(TrackerOptions {
            expected_writers: WRITERS,
            stall_grace_ms: 1 << 50,
            ..TrackerOptions::default()
        })
        .unwrap(),
        clock: AtomicU64::new(0),
        done_at: (0..deliveries).map(|_| AtomicU64::new(u64::MAX)).collect(),
        listed: (0..cfg.removable).map(|_| Mutex::new(Vec::new())).collect(),
        stop: AtomicBool::new(false),
    });
    if let Some(b) = cfg.budget {
        shared.tracker.set_call_budget(b);
    }
    let ids: Vec<WriterId> = (0..WRITERS)
        .map(|_| shared.tracker.register().unwrap())
        .collect();

    let mut senders = Vec::new();
    let mut flushers = Vec::new();
    for f in 0..FLUSHERS {
        let (tx, rx) = mpsc::channel();
        senders.push(tx);
        let (s, ids) = (Arc::clone(&shared), ids.clone());
        flushers.push(thread::spawn(move || {
            flusher(s, ids, rx, 0x9E37_79B9 + f as u64)
        }));
    }
    let readers: Vec<_> = (0..cfg.readers)
        .map(|_| {
            let s = Arc::clone(&shared);
            thread::spawn(move || {
                let mut reads = Vec::new();
                while !s.stopped() {
                    s.read_ack(&mut reads);
                    if reads.len() % 64 == 0 {
                        thread::yield_now();
                    }
                }
                reads
            })
        })
        .collect();
    let remover = (cfg.removable > 0).then(|| {
        let (s, ids) = (Arc::clone(&shared), ids.clone());
        thread::spawn(move || remover(s, ids, 0x5EED))
    });
    let sweeper = cfg.sweeper.then(|| {
        let s = Arc::clone(&shared);
        thread::spawn(move || sweeper(s))
    });

    // The committer (this thread).
    let first_removable = WRITERS - cfg.removable;
    let mut commit_stamp = Vec::with_capacity(n);
    let mut next = 0usize;
    for (c, chosen) in plan.iter().enumerate() {
        let tx = c as u64 + 1;
        let offset = Offset::new(tx, 1 + rng.below(3));
        let writers: Vec<WriterId> = chosen.iter().map(|&w| ids[w]).collect();
        for (k, &w) in chosen.iter().enumerate() {
            if w >= first_removable {
                shared.listed[w - first_removable]
                    .lock()
                    .unwrap()
                    .push(next + k);
            }
        }
        let stamp = shared.stamp();
        commit_stamp.push(stamp);
        shared.tracker.commit(offset, &writers, stamp).unwrap();
        for &w in chosen {
            senders[w % FLUSHERS]
                .send(Delivery {
                    id: next,
                    writer: w,
                    offset,
                })
                .unwrap();
            next += 1;
        }
    }
    drop(senders);
    let mut reads = Vec::new();
    let mut reports = 0;
    for h in flushers {
        let (r, n) = h.join().unwrap();
        reads.extend(r);
        reports += n;
    }
    shared.stop.store(true, Ordering::Release);
    for h in readers {
        reads.extend(h.join().unwrap());
    }
    let removals = remover.map_or(0, |h| h.join().unwrap());
    let sweeps = sweeper.map_or(0, |h| h.join().unwrap());

    // prefix_max[k] = the latest done time among commits 0..k (tx 1..=k).
    let mut prefix_max = Vec::with_capacity(n + 1);
    prefix_max.push(0u64);
    let mut d = 0;
    for (c, chosen) in plan.iter().enumerate() {
        let mut done = commit_stamp[c];
        for _ in chosen {
            let at = shared.done_at[d].load(Ordering::SeqCst);
            assert_ne!(at, u64::MAX, "delivery {d} never reported");
            done = done.max(at);
            d += 1;
        }
        prefix_max.push((*prefix_max.last().unwrap()).max(done));
    }
    let mut non_null = 0;
    for &(ack, stamp) in &reads {
        let Some(ack) = ack else { continue };
        non_null += 1;
        let k = ack as usize;
        assert!(k <= n, "ack {ack} beyond the last commit");
        assert!(
            prefix_max[k] < stamp,
            "ack {ack} read at stamp {stamp} passed a commit done at {}",
            prefix_max[k]
        );
    }
    // Liveness: once every report is in, what is left is at most a budgeted backlog, which
    // later calls (here: `run_backlog`) finish; then the ack is the last commit.
    let work = shared.tracker.work_stats();
    assert!(work.max_call_work <= work.budget, "{work:?}");
    let mut steps = 0;
    while shared.tracker.run_backlog() {
        steps += 1;
        assert!(steps < 1_000_000, "the backlog does not shrink: {work:?}");
    }
    assert_eq!(
        shared.tracker.ack(),
        Some(n as u64),
        "liveness after the drain ({work:?}, {steps} backlog steps)"
    );
    assert!(non_null > 1000, "the readers saw too few acks ({non_null})");
    let stats = shared.tracker.stats(0);
    assert_eq!(stats.pending, 0);
    eprintln!(
        "stress: {n} commits, {deliveries} deliveries, {reports} flush reports, {removals} \
         removals, {sweeps} sweeper rounds, {} ack reads checked, {steps} backlog steps at the \
         end, {work:?}",
        reads.len()
    );
}

#[test]
fn ack_never_passes_an_unflushed_commit_under_concurrency() {
    run(&Config {
        commits: commits(1_000_000),
        removable: 0,
        sweeper: false,
        readers: 1,
        budget: None,
    });
}

#[test]
fn eight_threads_with_removals_sweeps_and_small_budget() {
    run(&Config {
        commits: commits(300_000),
        removable: 16,
        sweeper: true,
        readers: 2,
        budget: Some(8),
    });
}
