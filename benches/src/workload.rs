//! The DOMAIN.md §8 workload, deterministic.
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
