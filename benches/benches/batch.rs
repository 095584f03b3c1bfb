//! Batch buffer throughput and push latency against an in-bench baseline: a crossbeam bounded
//! channel plus a `Vec` batcher with the same triggers (count 512, linger 5 ms).
//!
//! Run: `cargo bench -p tidemark-benches --bench batch` (about a minute). Test mode (each
//! benchmark once): `cargo bench -p tidemark-benches --bench batch -- --test`.
//!
//! Pipeline: P producers push 64-byte messages (pre-built, untimed) through the buffer to one
//! sink thread that acks every batch; a run ends when the sink has seen every message. Both
//! implementations pay the same per-message allocation and cross-thread free.
use std::hint::black_box;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use crossbeam_channel::{RecvTimeoutError, bounded};
use tidemark::batch::{BatchBuffer, BatchConfig, Poll};

const MESSAGE_BYTES: usize = 64;
const BATCH: usize = 512;
const LINGER: Duration = Duration::from_millis(5);
const CAPACITY: usize = 1 << 14;
/// Messages per pipeline run (a multiple of BATCH and of every producer count).
const RUN: usize = 1 << 16;

fn messages(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| vec![i as u8; MESSAGE_BYTES]).collect()
}

fn config() -> BatchConfig {
    let mut c = BatchConfig::default();
    c.max_messages = BATCH;
    c.max_bytes = (BATCH * MESSAGE_BYTES) as u64;
    c.linger = LINGER;
    c.capacity_messages = CAPACITY;
    c.capacity_bytes = (CAPACITY * MESSAGE_BYTES) as u64;
    c.max_inflight_batches = 4;
    c
}

/// One run through tidemark: returns the time from the first push to the last ack.
fn run_tidemark(producers: usize) -> Duration {
    let buffer = BatchBuffer::new(config()).unwrap();
    let per = RUN / producers;
    let inputs: Vec<Vec<Vec<u8>>> = (0..producers).map(|_| messages(per)).collect();
    let start = Instant::now();
    thread::scope(|s| {
        let buffer = &buffer;
        s.spawn(move || {
            let mut seen = 0;
            while seen < RUN {
                let batch = buffer.next_batch(Duration::from_secs(5)).unwrap();
                seen += batch.len();
                buffer.ack(batch).unwrap();
            }
        });
        for input in inputs {
            s.spawn(move || {
                for m in input {
                    buffer
                        .push_timeout(m, None, Duration::from_secs(5))
                        .unwrap();
                }
            });
        }
    });
    start.elapsed()
}

/// The baseline: a bounded crossbeam channel and a sink that batches into a `Vec` by count and
/// linger (age of the batch's first message). It takes what is queued with `try_recv` and reads
/// the clock only when it has to wait, so it pays no clock read per message.
fn run_baseline(producers: usize) -> Duration {
    let (tx, rx) = bounded::<Vec<u8>>(CAPACITY);
    let per = RUN / producers;
    let inputs: Vec<Vec<Vec<u8>>> = (0..producers).map(|_| messages(per)).collect();
    let start = Instant::now();
    thread::scope(|s| {
        s.spawn(move || {
            let mut seen = 0;
            let mut batch: Vec<Vec<u8>> = Vec::with_capacity(BATCH);
            let mut first_at: Option<Instant> = None;
            let emit = |batch: &mut Vec<Vec<u8>>, seen: &mut usize| {
                *seen += batch.len();
                black_box(std::mem::replace(batch, Vec::with_capacity(BATCH)));
            };
            while seen < RUN {
                let m = match rx.try_recv() {
                    Ok(m) => m,
                    Err(_) => {
                        // Queue empty: wait, at most until the linger deadline.
                        let now = Instant::now();
                        let deadline = match (batch.is_empty(), first_at) {
                            (false, Some(f)) => f + LINGER,
                            _ => now + Duration::from_secs(5),
                        };
                        match rx.recv_deadline(deadline) {
                            Ok(m) => m,
                            Err(RecvTimeoutError::Timeout) => {
                                emit(&mut batch, &mut seen);
                                continue;
                            }
                            Err(RecvTimeoutError::Disconnected) => break,
                        }
                    }
                };
                if batch.is_empty() {
                    // The linger clock starts with the batch's first message. Reading it once
                    // per batch (not per message) keeps the baseline's hot loop clock-free.
                    first_at = Some(Instant::now());
                }
                batch.push(m);
                // Count trigger; linger is checked every 64 messages while messages flow.
                let aged = || {
                    batch.len().is_multiple_of(64)
                        && first_at.is_some_and(|f| f.elapsed() >= LINGER)
                };
                if batch.len() == BATCH || aged() {
                    emit(&mut batch, &mut seen);
                }
            }
        });
        for input in inputs {
            let tx = tx.clone();
            s.spawn(move || {
                for m in input {
                    tx.send(m).unwrap();
                }
            });
        }
        drop(tx);
    });
    start.elapsed()
}

fn throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("batch/throughput");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(RUN as u64));
    for producers in [1usize, 2] {
        group.bench_with_input(
            BenchmarkId::new("tidemark", producers),
            &producers,
            |b, &p| b.iter_custom(|iters| (0..iters).map(|_| run_tidemark(p)).sum()),
        );
        group.bench_with_input(
            BenchmarkId::new("crossbeam+vec", producers),
            &producers,
            |b, &p| b.iter_custom(|iters| (0..iters).map(|_| run_baseline(p)).sum()),
        );
    }
    group.finish();
}

/// Pushes `iters` messages in chunks that fit the capacity, timing only the pushes; the sink
/// drains between chunks, untimed.
fn push_latency(c: &mut Criterion) {
    let mut group = c.benchmark_group("batch/push_latency");
    group
        .sample_size(50)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    const CHUNK: u64 = (CAPACITY / 2) as u64;
    group.bench_function("tidemark_try_push", |b| {
        let buffer = BatchBuffer::new(config()).unwrap();
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let k = left.min(CHUNK);
                let input = messages(k as usize);
                let start = Instant::now();
                for m in input {
                    buffer.try_push(m, None).unwrap();
                }
                total += start.elapsed();
                left -= k;
                // Mark everything due (no sink acks in time: the flush returns at once).
                let _ = buffer.flush(buffer.now());
                while let Poll::Ready(batch) = buffer.poll_batch(buffer.now()) {
                    buffer.ack(batch).unwrap();
                }
            }
            total
        })
    });
    group.bench_function("crossbeam_try_send", |b| {
        let (tx, rx) = bounded::<Vec<u8>>(CAPACITY);
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let k = left.min(CHUNK);
                let input = messages(k as usize);
                let start = Instant::now();
                for m in input {
                    tx.try_send(m).unwrap();
                }
                total += start.elapsed();
                left -= k;
                while let Ok(m) = rx.try_recv() {
                    black_box(m);
                }
            }
            total
        })
    });
    group.finish();
}

/// The `batch` group: throughput, then push latency.
fn main() {
    let mut c = Criterion::default().configure_from_args();
    throughput(&mut c);
    push_latency(&mut c);
    c.final_summary();
}
