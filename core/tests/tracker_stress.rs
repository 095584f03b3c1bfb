//! Concurrent stress test: 1 committer, 3 flushers and an ack reader on std threads, with an
//! independent checker. Every flush report and commit takes a stamp from a SeqCst counter
//! *before* the call; every ack read takes one *after* the load. Afterwards the checker proves,
//! for every read `(ack, stamp)`, that each commit with `tx <= ack` was committed and claimed
//! flushed by all of its writers before that read (so the ack never passed an unflushed
//! commit), and that the final ack equals the last commit's tx.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;

use tidemark::{Offset, Tracker, TrackerOptions, WriterId};

const WRITERS: usize = 96;
const FLUSHERS: usize = 3;

fn commits() -> usize {
    std::env::var("TIDEMARK_STRESS_COMMITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
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

struct Shared {
    tracker: Tracker,
    clock: AtomicU64,
    /// Per commit index: the latest stamp of its commit call or any claim of its deliveries.
    claimed_at: Vec<AtomicU64>,
}

impl Shared {
    fn stamp(&self) -> u64 {
        // SeqCst: the stamps form one total order consistent with happens-before.
        self.clock.fetch_add(1, Ordering::SeqCst) + 1
    }
    fn claim(&self, commit: usize, stamp: u64) {
        self.claimed_at[commit].fetch_max(stamp, Ordering::SeqCst);
    }
    fn read_ack(&self, log: &mut Vec<(Option<u64>, u64)>) {
        let ack = self.tracker.ack();
        let stamp = self.stamp();
        log.push((ack, stamp));
    }
}

#[derive(Clone, Copy)]
struct Delivery {
    commit: usize,
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
                shared.claim(d.commit, stamp);
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
                shared.claim(d.commit, stamp);
            }
            shared.tracker.flushed(ids[w], last.offset, stamp).unwrap();
            reports += 1;
        }
    }
    (reads, reports)
}

#[test]
fn ack_never_passes_an_unflushed_commit_under_concurrency() {
    let n = commits();
    let shared = Arc::new(Shared {
        tracker: Tracker::new(TrackerOptions {
            expected_writers: WRITERS,
            ..TrackerOptions::default()
        })
        .unwrap(),
        clock: AtomicU64::new(0),
        claimed_at: (0..n).map(|_| AtomicU64::new(0)).collect(),
    });
    let ids: Vec<WriterId> = (0..WRITERS)
        .map(|_| shared.tracker.register().unwrap())
        .collect();

    let mut senders = Vec::new();
    let mut handles = Vec::new();
    for f in 0..FLUSHERS {
        let (tx, rx) = mpsc::channel();
        senders.push(tx);
        let (s, ids) = (Arc::clone(&shared), ids.clone());
        handles.push(thread::spawn(move || {
            flusher(s, ids, rx, 0x9E37_79B9 + f as u64)
        }));
    }
    let done = Arc::new(AtomicU64::new(0));
    let reader = {
        let (s, done) = (Arc::clone(&shared), Arc::clone(&done));
        thread::spawn(move || {
            let mut reads = Vec::new();
            while done.load(Ordering::Acquire) == 0 {
                s.read_ack(&mut reads);
                if reads.len() % 64 == 0 {
                    thread::yield_now();
                }
            }
            reads
        })
    };

    let mut rng = Rng(0xC0FF_EE00_D15E_A5E5);
    let mut chosen = Vec::with_capacity(4);
    for c in 0..n {
        let tx = c as u64 + 1;
        let offset = Offset::new(tx, 1 + rng.below(3));
        chosen.clear();
        for _ in 0..rng.below(5) {
            let w = rng.below(WRITERS as u64) as usize;
            if !chosen.contains(&w) {
                chosen.push(w);
            }
        }
        let writers: Vec<WriterId> = chosen.iter().map(|&w| ids[w]).collect();
        let stamp = shared.stamp();
        shared.claim(c, stamp);
        shared.tracker.commit(offset, &writers, stamp).unwrap();
        for &w in &chosen {
            senders[w % FLUSHERS]
                .send(Delivery {
                    commit: c,
                    writer: w,
                    offset,
                })
                .unwrap();
        }
    }
    drop(senders);
    let mut reads = Vec::new();
    let mut reports = 0;
    for h in handles {
        let (r, n) = h.join().unwrap();
        reads.extend(r);
        reports += n;
    }
    done.store(1, Ordering::Release);
    reads.extend(reader.join().unwrap());

    // prefix_max[k] = the latest claim among commits 0..k (tx 1..=k).
    let mut prefix_max = Vec::with_capacity(n + 1);
    prefix_max.push(0u64);
    for c in &shared.claimed_at {
        let m = (*prefix_max.last().unwrap()).max(c.load(Ordering::SeqCst));
        prefix_max.push(m);
    }
    let mut non_null = 0;
    for &(ack, stamp) in &reads {
        let Some(ack) = ack else { continue };
        non_null += 1;
        let k = ack as usize;
        assert!(k <= n, "ack {ack} beyond the last commit");
        assert!(
            prefix_max[k] < stamp,
            "ack {ack} read at stamp {stamp} passed a commit claimed at {}",
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
    assert!(non_null > 1000, "the reader saw too few acks ({non_null})");
    let stats = shared.tracker.stats(0);
    assert_eq!(stats.pending, 0);
    eprintln!(
        "stress: {n} commits, {reports} flush reports, {} ack reads checked, {steps} backlog \
         steps at the end, {work:?}",
        reads.len()
    );
}
