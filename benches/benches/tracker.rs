//! Tracker benchmarks (criterion group `tracker`): tidemark against the reference algorithm
//! (Electric's FlushTracker in Rust, `tidemark_testkit::model::ElectricTracker`).
//!
//! - `tracker/workload/{tidemark,reference}/N`: the docs/CONTRACT.md §8 workload at N = 10⁴, 3·10⁵
//!   and 10⁶ registered writers, single-threaded. Writers are registered and the tracker is in
//!   steady state (64 commits in flight) before measuring; one iteration is 4096 commits, and
//!   throughput is in writer-ops (one delivery plus its flush report; 4 per commit).
//! - `tracker/out-of-order/{tidemark,reference}/3e5`: the out-of-order workload
//!   (`tidemark_benches::workload::OutOfOrder`: report delays exponential around 64 commits per
//!   delivery, one delivery in 200 delayed 10⁴–2·10⁴ commits, each writer in order), at
//!   3·10⁵ writers after 30 000 warm-up commits; one iteration is 4096 commits, events generated
//!   before the clock starts.
//! - `tracker/ack/{tidemark,reference-mutex}`: reading the ack of a tracker in steady state.
//! - `tracker/pipeline/{tidemark,reference-mutex}/N`: one committer thread commits (4 writers
//!   per commit) and sends each commit through a bounded `std::sync::mpsc` channel (64 commits)
//!   to one flusher thread, which reports each writer flushed. The reference runs behind a
//!   `std::sync::Mutex` (one lock per call, as two threads must share it). `channel-only` runs
//!   the same threads and channel with no tracker: the harness's own floor.
//!
//! After criterion, a side-by-side run (same workload, interleaved, median of 5 runs of 200k
//! commits) prints a markdown table of ns per writer-op and the reference/tidemark ratio, and an
//! unmeasured pass compares each tracker's ack with the exact ack after every commit.
//!
//! `cargo bench -p tidemark-benches --bench tracker` (about 2–3 minutes on 2 cores);
//! `-- --test` runs each benchmark once and the table with tiny counts.
// The baseline deliberately uses a plain std lock: the workspace clippy.toml forbids naming
// std::sync::Mutex outside core's sync facade, which is about core, not about baselines.
#![allow(clippy::disallowed_types)]

use std::hint::black_box;
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use tidemark::Offset;
use tidemark_benches::sink::{
    ReferenceSink, Sink, TidemarkSink, now_ms, replay, run, run_out_of_order, warm_up,
};
use tidemark_benches::workload::{LAG, OutOfOrder, WRITERS_PER_COMMIT, Workload, Writers};

/// Writer counts: (N, label).
const SIZES: [(u32, &str); 3] = [(10_000, "1e4"), (300_000, "3e5"), (1_000_000, "1e6")];
/// Commits per measured iteration of the single-threaded workload.
const BATCH: u64 = 4096;
/// Commits per measured iteration of the two-thread pipeline.
const PIPE_BATCH: u64 = 16_384;
/// Commits run after the first 64 before measuring (caches, allocations).
const WARM: u64 = 8192;
/// Writers in the pipeline and ack benches.
const PIPE_N: u32 = 300_000;
const SEED: u64 = 0x7469_6465_6d61_726b;

fn ops(commits: u64) -> u64 {
    commits * WRITERS_PER_COMMIT as u64
}

fn tidemark_steady(n: u32) -> (Workload, TidemarkSink) {
    let mut wl = Workload::new(n, SEED);
    let mut s = TidemarkSink::new(n);
    warm_up(&mut wl, &mut s, WARM);
    (wl, s)
}

fn reference_steady(n: u32) -> (Workload, ReferenceSink) {
    let mut wl = Workload::new(n, SEED);
    let mut s = ReferenceSink::new();
    warm_up(&mut wl, &mut s, WARM);
    (wl, s)
}

/// Times `commits` workload steps.
fn timed<S: Sink>(wl: &mut Workload, s: &mut S, commits: u64) -> Duration {
    let start = Instant::now();
    run(wl, s, commits);
    black_box(s.ack());
    start.elapsed()
}

fn workload(c: &mut Criterion) {
    let mut g = c.benchmark_group("tracker");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1500))
        .throughput(Throughput::Elements(ops(BATCH)));
    for (n, label) in SIZES {
        // Set up lazily (only if the benchmark is selected) and once (criterion calls the
        // closure once per sample); the state carries on from one iteration to the next.
        let mut state = None;
        g.bench_function(BenchmarkId::new("workload/tidemark", label), |b| {
            let (wl, s) = state.get_or_insert_with(|| tidemark_steady(n));
            b.iter_custom(|iters| timed(wl, s, iters * BATCH));
        });
        drop(state);
        let mut state = None;
        g.bench_function(BenchmarkId::new("workload/reference", label), |b| {
            let (wl, s) = state.get_or_insert_with(|| reference_steady(n));
            b.iter_custom(|iters| timed(wl, s, iters * BATCH));
        });
    }
    g.finish();
}

/// Commits of the out-of-order workload before measuring (the slow reports reach steady state).
const OOO_WARM: u64 = 30_000;
/// Writers in the out-of-order runs.
const OOO_N: u32 = 300_000;

fn ooo_steady<S: Sink>(mut s: S) -> (OutOfOrder, S) {
    let mut wl = OutOfOrder::new(OOO_N, SEED);
    run_out_of_order(&mut wl, &mut s, OOO_WARM);
    (wl, s)
}

/// Times `commits` commits of the out-of-order workload (generated before the clock starts).
fn timed_ooo<S: Sink>(wl: &mut OutOfOrder, s: &mut S, commits: u64) -> Duration {
    let mut events = Vec::new();
    wl.generate(commits, &mut events);
    let start = Instant::now();
    replay(&events, s);
    black_box(s.ack());
    start.elapsed()
}

fn out_of_order(c: &mut Criterion) {
    let mut g = c.benchmark_group("tracker");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1500))
        .throughput(Throughput::Elements(ops(BATCH)));
    let mut state = None;
    g.bench_function(BenchmarkId::new("out-of-order/tidemark", "3e5"), |b| {
        let (wl, s) = state.get_or_insert_with(|| ooo_steady(TidemarkSink::new(OOO_N)));
        b.iter_custom(|iters| timed_ooo(wl, s, iters * BATCH));
    });
    drop(state);
    let mut state = None;
    g.bench_function(BenchmarkId::new("out-of-order/reference", "3e5"), |b| {
        let (wl, s) = state.get_or_insert_with(|| ooo_steady(ReferenceSink::new()));
        b.iter_custom(|iters| timed_ooo(wl, s, iters * BATCH));
    });
    g.finish();
}

fn ack_read(c: &mut Criterion) {
    let mut g = c.benchmark_group("tracker");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_millis(800))
        .throughput(Throughput::Elements(1));
    let mut state = None;
    g.bench_function("ack/tidemark", |b| {
        let (_, s) = state.get_or_insert_with(|| tidemark_steady(PIPE_N));
        b.iter(|| black_box(s.tracker()).ack());
    });
    drop(state);
    let mut state = None;
    g.bench_function("ack/reference-mutex", |b| {
        let m = state.get_or_insert_with(|| Mutex::new(reference_steady(PIPE_N).1));
        b.iter(|| black_box(&*m).lock().unwrap().ack());
    });
    g.finish();
}

/// One committer (this thread) and one flusher thread joined by a bounded channel of commits.
/// Returns the wall time until the flusher reported the last commit.
fn pipeline_run<C, F>(wl: &mut Workload, commits: u64, mut commit: C, flush: F) -> Duration
where
    C: FnMut(Offset, &Writers, u64),
    F: Fn(u32, Offset, u64) + Sync,
{
    let (tx, rx) = mpsc::sync_channel::<(Offset, Writers)>(LAG);
    let flush = &flush;
    let start = Instant::now();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            for (offset, writers) in rx {
                let now = now_ms(offset.tx);
                for w in writers {
                    flush(w, offset, now);
                }
            }
        });
        for _ in 0..commits {
            let (offset, writers) = wl.next_commit();
            commit(offset, &writers, now_ms(offset.tx));
            tx.send((offset, writers)).expect("flusher alive");
        }
        drop(tx);
    });
    start.elapsed()
}

fn pipeline(c: &mut Criterion) {
    let mut g = c.benchmark_group("tracker");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(2000))
        .throughput(Throughput::Elements(ops(PIPE_BATCH)));
    let label = "3e5";
    let mut state = None;
    g.bench_function(BenchmarkId::new("pipeline/tidemark", label), |b| {
        let (wl, s) =
            state.get_or_insert_with(|| (Workload::new(PIPE_N, SEED), TidemarkSink::new(PIPE_N)));
        let s = &*s;
        b.iter_custom(|iters| {
            pipeline_run(
                wl,
                iters * PIPE_BATCH,
                |o, ws, now| s.tracker().commit(o, &s.ids(ws), now).expect("commit"),
                |w, o, now| s.tracker().flushed(s.id(w), o, now).expect("flushed"),
            )
        });
    });
    drop(state);
    // The floor: the same two threads and channel with no tracker at all.
    let mut wl = Workload::new(PIPE_N, SEED);
    g.bench_function(BenchmarkId::new("pipeline/channel-only", label), |b| {
        b.iter_custom(|iters| {
            pipeline_run(
                &mut wl,
                iters * PIPE_BATCH,
                |o, ws, now| {
                    black_box((o, ws, now));
                },
                |w, o, now| {
                    black_box((w, o, now));
                },
            )
        });
    });
    let mut state = None;
    g.bench_function(BenchmarkId::new("pipeline/reference-mutex", label), |b| {
        let (wl, m) = state.get_or_insert_with(|| {
            (
                Workload::new(PIPE_N, SEED),
                Mutex::new(ReferenceSink::new()),
            )
        });
        let m = &*m;
        b.iter_custom(|iters| {
            pipeline_run(
                wl,
                iters * PIPE_BATCH,
                |o, ws, now| m.lock().unwrap().commit(o, ws, now),
                |w, o, now| m.lock().unwrap().flushed(w, o, now),
            )
        });
    });
    g.finish();
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Side-by-side timing (interleaved runs, median) and an exactness pass; prints markdown.
fn side_by_side(test_mode: bool) {
    let (commits, reps, exact_commits) = if test_mode {
        (2_000, 1, 2_000)
    } else {
        (200_000, 5, 20_000)
    };
    eprintln!();
    eprintln!(
        "Side by side: §8 workload, {commits} commits ({} writer-ops) per run, runs interleaved, \
         median of {reps}",
        ops(commits)
    );
    eprintln!();
    eprintln!(
        "| N | reference ns/writer-op | tidemark ns/writer-op | reference / tidemark | \
         ack lag behind exact, reference (commits, mean) | tidemark (mean) | tidemark exact | \
         tidemark < reference |"
    );
    eprintln!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for (n, label) in SIZES {
        let (mut wt, mut t) = tidemark_steady(n);
        let (mut wr, mut r) = reference_steady(n);
        let (mut tt, mut tr) = (Vec::new(), Vec::new());
        for _ in 0..reps {
            tt.push(timed(&mut wt, &mut t, commits).as_nanos() as f64 / ops(commits) as f64);
            tr.push(timed(&mut wr, &mut r, commits).as_nanos() as f64 / ops(commits) as f64);
        }
        let (mt, mr) = (median(tt), median(tr));
        // Exactness: after commit i (steady state) commits up to i − LAG are flushed by every
        // writer and commit i − LAG + 1 is not, so the exact ack is `commits − LAG`.
        assert_eq!(wt.commits(), wr.commits());
        let (mut lag_t, mut lag_r, mut exact, mut below) = (0u64, 0u64, 0u64, 0u64);
        for _ in 0..exact_commits {
            run(&mut wt, &mut t, 1);
            run(&mut wr, &mut r, 1);
            let want = wt.commits() - LAG as u64;
            let (at, ar) = (t.ack().unwrap_or(0), r.ack().unwrap_or(0));
            assert!(at <= want, "tidemark acked {at} above the exact {want}");
            lag_t += want - at;
            lag_r += want.saturating_sub(ar);
            exact += (at == want) as u64;
            below += (t.ack() < r.ack()) as u64;
        }
        let k = exact_commits as f64;
        eprintln!(
            "| {label} | {mr:.0} | {mt:.0} | {:.2} | {:.2} | {:.2} | {:.1} % | {below} |",
            mr / mt,
            lag_r as f64 / k,
            lag_t as f64 / k,
            100.0 * exact as f64 / k,
        );
    }
}

/// Side-by-side timing of the out-of-order workload; checks both trackers end at the last
/// commit once every report is in.
fn side_by_side_ooo(test_mode: bool) {
    let (commits, reps, warm) = if test_mode {
        (2_000, 1, 2_000)
    } else {
        (200_000, 5, OOO_WARM)
    };
    let mut t = (OutOfOrder::new(OOO_N, SEED), TidemarkSink::new(OOO_N));
    let mut r = (OutOfOrder::new(OOO_N, SEED), ReferenceSink::new());
    run_out_of_order(&mut t.0, &mut t.1, warm);
    run_out_of_order(&mut r.0, &mut r.1, warm);
    let (mut tt, mut tr) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        tt.push(timed_ooo(&mut t.0, &mut t.1, commits).as_nanos() as f64 / ops(commits) as f64);
        tr.push(timed_ooo(&mut r.0, &mut r.1, commits).as_nanos() as f64 / ops(commits) as f64);
    }
    let in_flight = t.0.in_flight();
    let (mt, mr) = (median(tt), median(tr));
    let (mut et, mut er) = (Vec::new(), Vec::new());
    t.0.finish(&mut et);
    r.0.finish(&mut er);
    replay(&et, &mut t.1);
    replay(&er, &mut r.1);
    while t.1.tracker().run_backlog() {}
    let last = t.0.commits();
    assert_eq!(t.1.ack(), Some(last), "tidemark did not catch up");
    assert_eq!(r.1.ack(), Some(last), "the reference did not catch up");
    eprintln!();
    eprintln!(
        "Side by side: out-of-order workload, {} writers, {commits} commits per run, median of \
         {reps}, {in_flight} deliveries in flight at the end",
        OOO_N
    );
    eprintln!();
    eprintln!("| N | reference ns/writer-op | tidemark ns/writer-op | reference / tidemark |");
    eprintln!("| --- | --- | --- | --- |");
    eprintln!("| 3e5 | {mr:.0} | {mt:.0} | {:.2} |", mr / mt);
}

fn main() {
    let test_mode = std::env::args().any(|a| a == "--test");
    // Under `--profile-time` (criterion's profiling mode) only the selected benchmark runs.
    let profiling = std::env::args().any(|a| a == "--profile-time");
    let mut c = Criterion::default().configure_from_args();
    workload(&mut c);
    out_of_order(&mut c);
    ack_read(&mut c);
    pipeline(&mut c);
    c.final_summary();
    if !profiling {
        side_by_side(test_mode);
        side_by_side_ooo(test_mode);
    }
}
