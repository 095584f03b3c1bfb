//! The docs/CONTRACT.md §8 workload, deterministic.
//!
//! Writers are drawn uniformly from `0..n`, [`WRITERS_PER_COMMIT`] distinct writers per commit,
//! and each commit's writers report it flushed [`LAG`] commits later. A ring keeps the writer
//! lists of the last [`LAG`] commits: at commit `i` the generator first hands out the flush
//! reports of commit `i − LAG` (each of its writers reports that commit's offset), then commit
//! `i` itself. Commit `i` (0-based) has the offset `(i + 1, OP)`.
//!
//! A *writer-op* is one delivery plus its flush report, so a commit is
//! [`WRITERS_PER_COMMIT`] writer-ops.

use tidemark::Offset;

/// Distinct writers per commit.
pub const WRITERS_PER_COMMIT: usize = 4;
/// Commits in flight: a commit is flushed this many commits after it was made.
pub const LAG: usize = 64;
/// The `op` part of every commit's offset (any value works; the tx orders commits).
pub const OP: u64 = 2;

/// The writers of one commit, as indices in `0..n`.
pub type Writers = [u32; WRITERS_PER_COMMIT];

/// SplitMix64 (Steele, Lea, Flood 2014): a tiny, fast, deterministic 64-bit generator.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value uniform in `0..n` (Lemire's multiply-shift; the bias is below 2⁻³² for the
    /// sizes used here).
    #[inline]
    pub fn below(&mut self, n: u32) -> u32 {
        (((self.next_u64() >> 32) * n as u64) >> 32) as u32
    }
}

/// One step of the workload: the flush reports due now, then the commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// Commit `i − LAG`'s offset and writers, each of which reports that offset flushed now
    /// (`None` for the first [`LAG`] commits).
    pub flush: Option<(Offset, Writers)>,
    /// This commit's offset and writers.
    pub commit: (Offset, Writers),
}

/// The §8 workload generator (see the module docs).
#[derive(Clone, Debug)]
pub struct Workload {
    n: u32,
    rng: SplitMix64,
    ring: [Writers; LAG],
    next: u64,
}

impl Workload {
    /// A workload over `n` writers (`n >= WRITERS_PER_COMMIT`), seeded with `seed`.
    pub fn new(n: u32, seed: u64) -> Self {
        assert!(n as usize >= WRITERS_PER_COMMIT, "need at least 4 writers");
        Workload {
            n,
            rng: SplitMix64::new(seed),
            ring: [[0; WRITERS_PER_COMMIT]; LAG],
            next: 0,
        }
    }

    /// The number of writers drawn from.
    pub fn writers(&self) -> u32 {
        self.n
    }

    /// Commits generated so far.
    pub fn commits(&self) -> u64 {
        self.next
    }

    /// The offset of commit `i` (0-based).
    #[inline]
    pub fn offset_of(i: u64) -> Offset {
        Offset::new(i + 1, OP)
    }

    /// Draws [`WRITERS_PER_COMMIT`] distinct writers uniformly from `0..n`.
    #[inline]
    pub fn pick(&mut self) -> Writers {
        let mut ws = [0u32; WRITERS_PER_COMMIT];
        let mut k = 0;
        while k < WRITERS_PER_COMMIT {
            let w = self.rng.below(self.n);
            if !ws[..k].contains(&w) {
                ws[k] = w;
                k += 1;
            }
        }
        ws
    }

    /// The next step: the flush reports of commit `i − LAG`, then commit `i`.
    #[inline]
    pub fn step(&mut self) -> Step {
        let i = self.next;
        self.next += 1;
        let slot = (i % LAG as u64) as usize;
        let flush = (i >= LAG as u64).then(|| (Self::offset_of(i - LAG as u64), self.ring[slot]));
        let ws = self.pick();
        self.ring[slot] = ws;
        Step {
            flush,
            commit: (Self::offset_of(i), ws),
        }
    }

    /// The next commit's offset and writers, without scheduling its flush reports: for drivers
    /// that deliver the reports themselves (the two-thread pipeline). Do not mix with
    /// [`step`](Self::step) on one workload.
    #[inline]
    pub fn next_commit(&mut self) -> (Offset, Writers) {
        let i = self.next;
        self.next += 1;
        (Self::offset_of(i), self.pick())
    }

    /// The flush reports still owed (the last `min(LAG, commits)` commits), oldest first, as if
    /// the workload stopped committing and let every writer catch up.
    pub fn in_flight(&self) -> Vec<(Offset, Writers)> {
        let from = self.next.saturating_sub(LAG as u64);
        (from..self.next)
            .map(|i| (Self::offset_of(i), self.ring[(i % LAG as u64) as usize]))
            .collect()
    }
}

/// Mean report delay of an ordinary delivery in the out-of-order workload, in commits.
pub const OOO_MEAN_DELAY: f64 = 64.0;
/// One delivery in this many goes to slow storage in the out-of-order workload.
pub const OOO_SLOW_ONE_IN: u32 = 200;
/// The least delay of a slow delivery, in commits (it gets up to twice that).
pub const OOO_SLOW_DELAY: u64 = 10_000;

/// One event of the out-of-order workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A commit with this offset to these writers.
    Commit(Offset, Writers),
    /// This writer reports this offset flushed.
    Flushed(u32, Offset),
}

/// The out-of-order workload: the §8 writer choice (4 distinct writers per commit, uniform), but
/// each delivery is reported after its own delay: exponential around [`OOO_MEAN_DELAY`]
/// commits, and one delivery in [`OOO_SLOW_ONE_IN`] waits [`OOO_SLOW_DELAY`]–2·[`OOO_SLOW_DELAY`]
/// commits (slow storage). Each writer reports its own deliveries in order (a delivery is never
/// reported before the writer's earlier ones), so reports arrive out of order *across* writers.
#[derive(Clone, Debug)]
pub struct OutOfOrder {
    picker: Workload,
    rng: SplitMix64,
    /// Per writer: the commit index at which its latest delivery is due.
    due: Vec<u64>,
    /// Reports not yet due: `(due, tx, writer)`, earliest first (tx breaks ties in order).
    pending: std::collections::BinaryHeap<std::cmp::Reverse<(u64, u64, u32)>>,
}

impl OutOfOrder {
    /// An out-of-order workload over `n` writers, seeded with `seed`.
    pub fn new(n: u32, seed: u64) -> Self {
        OutOfOrder {
            picker: Workload::new(n, seed),
            rng: SplitMix64::new(seed ^ 0x5EED),
            due: vec![0; n as usize],
            pending: std::collections::BinaryHeap::new(),
        }
    }

    /// Commits generated so far.
    pub fn commits(&self) -> u64 {
        self.picker.commits()
    }

    /// Deliveries not yet reported.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    fn delay(&mut self) -> u64 {
        if self.rng.below(OOO_SLOW_ONE_IN) == 0 {
            return OOO_SLOW_DELAY + self.rng.below(OOO_SLOW_DELAY as u32) as u64;
        }
        // Inverse transform: −ln(U)·mean, U uniform in (0, 1].
        let u = ((self.rng.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64;
        (-u.ln() * OOO_MEAN_DELAY) as u64
    }

    /// Appends the events of the next `commits` commits to `out`: before commit `i`, every
    /// report due at or before `i`.
    pub fn generate(&mut self, commits: u64, out: &mut Vec<Event>) {
        for _ in 0..commits {
            let i = self.picker.commits();
            while let Some(&std::cmp::Reverse((due, tx, w))) = self.pending.peek() {
                if due > i {
                    break;
                }
                self.pending.pop();
                out.push(Event::Flushed(w, Offset::new(tx, OP)));
            }
            let (offset, writers) = self.picker.next_commit();
            for &w in &writers {
                let at = (i + 1 + self.delay()).max(self.due[w as usize]);
                self.due[w as usize] = at;
                self.pending.push(std::cmp::Reverse((at, offset.tx, w)));
            }
            out.push(Event::Commit(offset, writers));
        }
    }

    /// Appends every report still owed, in due order (as if committing stopped).
    pub fn finish(&mut self, out: &mut Vec<Event>) {
        while let Some(std::cmp::Reverse((_, tx, w))) = self.pending.pop() {
            out.push(Event::Flushed(w, Offset::new(tx, OP)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_distinct_and_in_range() {
        let (mut a, mut b) = (Workload::new(10, 7), Workload::new(10, 7));
        for _ in 0..1000 {
            let (sa, sb) = (a.step(), b.step());
            assert_eq!(sa, sb);
            let ws = sa.commit.1;
            assert!(ws.iter().all(|&w| w < 10));
            for i in 0..ws.len() {
                assert!(!ws[i + 1..].contains(&ws[i]), "{ws:?}");
            }
        }
    }

    #[test]
    fn flushes_lag_by_64_commits() {
        let mut w = Workload::new(1000, 1);
        let first: Vec<Step> = (0..LAG + 3).map(|_| w.step()).collect();
        assert!(first[..LAG].iter().all(|s| s.flush.is_none()));
        for k in 0..3 {
            assert_eq!(first[LAG + k].flush, Some(first[k].commit));
        }
        assert_eq!(w.in_flight().len(), LAG);
        assert_eq!(w.in_flight()[0], first[3].commit);
    }

    #[test]
    fn out_of_order_reports_each_writer_in_order_and_everything_once() {
        // Many writers, as in the bench: a slow delivery rarely holds a writer's next one.
        let mut w = OutOfOrder::new(100_000, 9);
        let mut ev = Vec::new();
        w.generate(30_000, &mut ev);
        w.finish(&mut ev);
        let mut last = vec![0u64; 100_000];
        let (mut sent, mut reported, mut slow) = (0, 0, 0);
        let mut commits = 0u64;
        for e in &ev {
            match *e {
                Event::Commit(_, ws) => {
                    sent += ws.len();
                    commits += 1;
                }
                Event::Flushed(w, o) => {
                    reported += 1;
                    assert!(o.tx >= last[w as usize], "writer {w} reported out of order");
                    last[w as usize] = o.tx;
                    // Commit `tx` was the `tx`-th; `commits` have been made by now.
                    slow += (commits - o.tx >= OOO_SLOW_DELAY) as usize;
                }
            }
        }
        assert_eq!(sent, reported);
        // About one in 200 of the deliveries committed before the last 10⁴ commits is slow.
        assert!((300..900).contains(&slow), "{slow} slow reports");
    }

    #[test]
    fn below_is_roughly_uniform() {
        let mut r = SplitMix64::new(42);
        let mut hist = [0u32; 8];
        for _ in 0..80_000 {
            hist[r.below(8) as usize] += 1;
        }
        assert!(
            hist.iter().all(|&h| (9_000..11_000).contains(&h)),
            "{hist:?}"
        );
    }
}
