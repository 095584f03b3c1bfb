//! Staleness benchmarks (criterion group `sweep`, docs/CONTRACT.md §4).
//!
//! - `sweep/none-expired/1e6`: a sweep over 10⁶ pending writers none of which is past the grace
//!   period (goal ≤ 1 µs). The sweep changes nothing, so one setup serves every iteration.
//! - `sweep/challenge-1pct/1e6` and `sweep/evict-1pct/1e6`: 10⁶ pending writers of which 1 %
//!   (every 100th index, spread over the table) made no progress since long before the grace
//!   period. Eviction takes two sweeps: the first challenges them, the next evicts them. Each is
//!   measured on a fresh setup (`iter_batched`, one setup per iteration, not timed); throughput
//!   is in expired writers (goal: cost proportional to the expired count).
//! - `sweep/workload-3e5/{never,every-1000}`: the docs/CONTRACT.md §8 workload at N = 3·10⁵ with
//!   `sweep` called every 1000 commits or never; the ratio is the cost that staleness sweeps add
//!   to the flush path (goal ≤ 10 %). One iteration is 4000 commits (16 000 writer-ops).
//!
//! After criterion a summary (own timing, medians) prints markdown: ns per sweep, ns per expired
//! writer at 0.1 % and 1 % expired (proportionality), and the every-1000/never ratio.
//!
//! `cargo bench -p tidemark-benches --bench sweep`; `-- --test` runs everything once.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, BenchmarkId, Criterion, SamplingMode, Throughput};
use tidemark::{Offset, SweepOutcome, TrackerOptions};
use tidemark_benches::sink::{Sink, TidemarkSink, now_ms, run, warm_up};
use tidemark_benches::workload::{WRITERS_PER_COMMIT, Workload};

/// Pending writers in the sweep benchmarks.
const N: u32 = 1_000_000;
const GRACE: u64 = 60_000;
/// Progress time of the writers that will expire.
const OLD_NOW: u64 = 0;
/// Progress time of everyone else.
const REST_NOW: u64 = 50_000;
/// The setup's own sweep (absorbs the new stints into the index; nothing is past the grace).
const ABSORB_NOW: u64 = 60_000;
/// The measured sweeps: the old writers are past the grace period, nobody else is.
const CHALLENGE_NOW: u64 = 100_000;
const EVICT_NOW: u64 = 100_001;
/// Writers per setup commit.
const CHUNK: usize = 1000;
/// Workload commits per measured iteration, and the sweep period.
const WL_BATCH: u64 = 4000;
const SWEEP_EVERY: u64 = 1000;
const WL_N: u32 = 300_000;
const SEED: u64 = 0x0073_7765_6570;

/// `n` registered writers, all pending: those with `index % stride == 0` (none if `stride` is
/// 0) became pending at `OLD_NOW`, the others at `REST_NOW`; one sweep at `ABSORB_NOW` has
/// indexed them all. Returns the tracker and the number of old writers.
fn pending(n: u32, stride: u32) -> (TidemarkSink, usize) {
    let s = TidemarkSink::with_options(
        n,
        TrackerOptions {
            expected_writers: n as usize,
            stall_grace_ms: GRACE,
            ..Default::default()
        },
    );
    let is_old = |i: &u32| i.checked_rem(stride) == Some(0);
    let old: Vec<_> = (0..n).filter(is_old).map(|i| s.id(i)).collect();
    let rest: Vec<_> = (0..n).filter(|i| !is_old(i)).map(|i| s.id(i)).collect();
    let mut tx = 0;
    for (ids, now) in [(&old, OLD_NOW), (&rest, REST_NOW)] {
        for chunk in ids.chunks(CHUNK) {
            tx += 1;
            s.tracker()
                .commit(Offset::new(tx, 0), chunk, now)
                .expect("commit");
        }
    }
    assert_eq!(s.tracker().sweep(ABSORB_NOW), SweepOutcome::default());
    (s, old.len())
}

/// [`pending`], then the challenge sweep (for measuring the evict sweep).
fn challenged(n: u32, stride: u32) -> (TidemarkSink, usize) {
    let (s, old) = pending(n, stride);
    assert_eq!(s.tracker().sweep(CHALLENGE_NOW).challenged, old);
    (s, old)
}

fn sweep_once(now: u64) -> impl FnMut((TidemarkSink, usize)) -> (TidemarkSink, SweepOutcome) {
    move |(s, old)| {
        let out = s.tracker().sweep(now);
        assert_eq!(out.challenged + out.evicted, old);
        (s, out)
    }
}

fn sweeps(c: &mut Criterion) {
    let mut g = c.benchmark_group("sweep");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_millis(500))
        .throughput(Throughput::Elements(1));
    let mut state = None;
    g.bench_function("none-expired/1e6", |b| {
        let (s, _) = state.get_or_insert_with(|| pending(N, 0));
        b.iter(|| black_box(s.tracker().sweep(black_box(CHALLENGE_NOW))));
    });
    drop(state);

    // One fresh 10⁶-writer setup per iteration: keep iteration counts minimal (flat sampling,
    // 10 samples of one iteration each, a single warm-up run).
    let expired = (N / 100) as u64;
    g.sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_millis(1))
        .throughput(Throughput::Elements(expired));
    g.bench_function("challenge-1pct/1e6", |b| {
        b.iter_batched(
            || pending(N, 100),
            sweep_once(CHALLENGE_NOW),
            BatchSize::PerIteration,
        );
    });
    g.bench_function("evict-1pct/1e6", |b| {
        b.iter_batched(
            || challenged(N, 100),
            sweep_once(EVICT_NOW),
            BatchSize::PerIteration,
        );
    });
    g.finish();
}

/// `commits` workload steps, with a sweep every `SWEEP_EVERY` commits if `sweeping`.
fn workload_run(wl: &mut Workload, s: &mut TidemarkSink, commits: u64, sweeping: bool) -> Duration {
    let start = Instant::now();
    let mut left = commits;
    while left > 0 {
        let k = left.min(SWEEP_EVERY);
        run(wl, s, k);
        left -= k;
        if sweeping {
            black_box(s.tracker().sweep(now_ms(wl.commits())));
        }
    }
    black_box(s.ack());
    start.elapsed()
}

fn steady(n: u32) -> (Workload, TidemarkSink) {
    let mut wl = Workload::new(n, SEED);
    let mut s = TidemarkSink::new(n);
    warm_up(&mut wl, &mut s, 8192);
    (wl, s)
}

fn overhead(c: &mut Criterion) {
    let mut g = c.benchmark_group("sweep");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1500))
        .throughput(Throughput::Elements(WL_BATCH * WRITERS_PER_COMMIT as u64));
    for (name, sweeping) in [("never", false), ("every-1000", true)] {
        let mut state = None;
        g.bench_function(BenchmarkId::new("workload-3e5", name), |b| {
            let (wl, s) = state.get_or_insert_with(|| steady(WL_N));
            b.iter_custom(|iters| workload_run(wl, s, iters * WL_BATCH, sweeping));
        });
    }
    g.finish();
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed().as_nanos() as f64)
}

fn summary(test_mode: bool) {
    let (n, reps, sweeps, commits) = if test_mode {
        (100_000, 1, 1_000, 4_000)
    } else {
        (N, 3, 100_000, 100_000)
    };
    eprintln!();
    eprintln!(
        "Sweep summary (own timing, median of {reps}), {n} pending writers, grace {GRACE} ms"
    );
    eprintln!();
    let (s, _) = pending(n, 0);
    let (_, ns) = timed(|| {
        for _ in 0..sweeps {
            black_box(s.tracker().sweep(black_box(CHALLENGE_NOW)));
        }
    });
    drop(s);
    eprintln!("| case | expired | sweep time | ns per expired writer |");
    eprintln!("| --- | --- | --- | --- |");
    eprintln!("| none expired | 0 | {:.0} ns | – |", ns / sweeps as f64);
    for (pct, stride) in [("0.1 %", 1000), ("1 %", 100)] {
        let (mut ch, mut ev, mut old) = (Vec::new(), Vec::new(), 0);
        for _ in 0..reps {
            let (s, k) = pending(n, stride);
            old = k;
            let (out, t) = timed(|| s.tracker().sweep(CHALLENGE_NOW));
            assert_eq!(out.challenged, k);
            ch.push(t);
            let (out, t) = timed(|| s.tracker().sweep(EVICT_NOW));
            assert_eq!(out.evicted, k);
            ev.push(t);
        }
        let (ch, ev) = (median(ch), median(ev));
        eprintln!(
            "| {pct} expired, challenge sweep | {old} | {:.0} µs | {:.0} |",
            ch / 1e3,
            ch / old as f64
        );
        eprintln!(
            "| {pct} expired, evict sweep | {old} | {:.0} µs | {:.0} |",
            ev / 1e3,
            ev / old as f64
        );
    }

    // Staleness cost on the flush path: interleaved runs, same workload.
    let (mut wn, mut sn) = steady(WL_N);
    let (mut ws, mut ss) = steady(WL_N);
    let (mut never, mut every) = (Vec::new(), Vec::new());
    let ops = (commits * WRITERS_PER_COMMIT as u64) as f64;
    for _ in 0..reps.max(5) {
        never.push(workload_run(&mut wn, &mut sn, commits, false).as_nanos() as f64 / ops);
        every.push(workload_run(&mut ws, &mut ss, commits, true).as_nanos() as f64 / ops);
    }
    let (never, every) = (median(never), median(every));
    eprintln!();
    eprintln!("| §8 workload, N = 3·10⁵ | ns/writer-op | vs never |");
    eprintln!("| --- | --- | --- |");
    eprintln!("| never swept | {never:.1} | 1.00 |");
    eprintln!(
        "| swept every {SWEEP_EVERY} commits | {every:.1} | {:.3} |",
        every / never
    );
}

fn main() {
    let test_mode = std::env::args().any(|a| a == "--test");
    // Under `--profile-time` (criterion's profiling mode) only the selected benchmark runs.
    let profiling = std::env::args().any(|a| a == "--profile-time");
    let mut c = Criterion::default().configure_from_args();
    sweeps(&mut c);
    overhead(&mut c);
    c.final_summary();
    if !profiling {
        summary(test_mode);
    }
}
