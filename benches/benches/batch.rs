//! Batch buffer throughput and push latency against an in-bench baseline: a crossbeam bounded
//! channel plus a `Vec` batcher with the same triggers (count 512, linger 5 ms).
//!
//! Run: `cargo bench -p tidemark-benches --bench batch` (about a minute). Test mode (each
//! benchmark once): `cargo bench -p tidemark-benches --bench batch -- --test`.
//!
//! Pipeline: P producers push 64-byte messages through the buffer to one sink thread that reads
//! every payload of every batch and acks it; a run ends when the sink has seen every message.
//! Two input shapes, each against the baseline a user would write for it:
//! - `slice`: the producer holds bytes it keeps (a receive buffer, a decoded frame): tidemark
//!   copies them in (`try_push_slice`); the channel user must allocate an owned copy per
//!   message (`to_vec`) to send it, and the sink frees it.
//! - `owned`: the producer already holds one `Vec` per message (pre-built, untimed): the channel
//!   moves it; tidemark copies it in and the producer frees it (`try_push`).
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

/// One contiguous input of `n` messages (the producer's own bytes, which it keeps).
fn packed(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n * MESSAGE_BYTES];
    for (i, m) in v.chunks_exact_mut(MESSAGE_BYTES).enumerate() {
        m.fill(i as u8);
    }
    v
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

#[derive(Clone, Copy, Debug)]
enum Input {
    Slice,
    Owned,
}

/// The tidemark sink: reads every payload (as a consumer would), acks every batch.
fn tidemark_sink(buffer: &BatchBuffer) {
    let mut seen = 0;
    while seen < RUN {
        let batch = buffer.next_batch(Duration::from_secs(5)).unwrap();
        seen += batch.len();
        let mut sum = 0usize;
        for m in batch.iter() {
            sum += m.payload[0] as usize;
        }
        black_box(sum);
        buffer.ack(batch).unwrap();
    }
}

/// One run through tidemark: returns the time from the first push to the last ack.
fn run_tidemark(producers: usize, input: Input) -> Duration {
    let buffer = BatchBuffer::new(config()).unwrap();
    let per = RUN / producers;
    let slices: Vec<Vec<u8>> = (0..producers).map(|_| packed(per)).collect();
    let owned: Vec<Vec<Vec<u8>>> = match input {
        Input::Owned => (0..producers).map(|_| messages(per)).collect(),
        Input::Slice => Vec::new(),
    };
    let start = Instant::now();
    thread::scope(|s| {
        let buffer = &buffer;
        s.spawn(move || tidemark_sink(buffer));
        match input {
            Input::Slice => {
                for bytes in &slices {
                    s.spawn(move || {
                        for m in bytes.chunks_exact(MESSAGE_BYTES) {
                            buffer
                                .push_slice_timeout(m, None, Duration::from_secs(5))
                                .unwrap();
                        }
                    });
                }
            }
            Input::Owned => {
                for input in owned {
                    s.spawn(move || {
                        for m in input {
                            buffer
                                .push_timeout(m, None, Duration::from_secs(5))
                                .unwrap();
                        }
                    });
                }
            }
        }
    });
    start.elapsed()
}

/// The baseline: a bounded crossbeam channel and a sink that batches into a `Vec` by count and
/// linger (age of the batch's first message). It takes what is queued with `try_recv` and reads
/// the clock only when it has to wait, so it pays no clock read per message. With `Slice`
/// input the producer sends an owned copy of each message (`to_vec`).
fn run_baseline(producers: usize, input: Input) -> Duration {
    let (tx, rx) = bounded::<Vec<u8>>(CAPACITY);
    let per = RUN / producers;
    let slices: Vec<Vec<u8>> = (0..producers).map(|_| packed(per)).collect();
    let owned: Vec<Vec<Vec<u8>>> = match input {
        Input::Owned => (0..producers).map(|_| messages(per)).collect(),
        Input::Slice => Vec::new(),
    };
    let start = Instant::now();
    thread::scope(|s| {
        s.spawn(move || {
            let mut seen = 0;
            let mut batch: Vec<Vec<u8>> = Vec::with_capacity(BATCH);
            let mut first_at: Option<Instant> = None;
            let emit = |batch: &mut Vec<Vec<u8>>, seen: &mut usize| {
                *seen += batch.len();
                let mut sum = 0usize;
                for m in batch.iter() {
                    sum += m[0] as usize;
                }
                black_box(sum);
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
        match input {
            Input::Slice => {
                for bytes in &slices {
                    let tx = tx.clone();
                    s.spawn(move || {
                        for m in bytes.chunks_exact(MESSAGE_BYTES) {
                            tx.send(m.to_vec()).unwrap();
                        }
                    });
                }
            }
            Input::Owned => {
                for input in owned {
                    let tx = tx.clone();
                    s.spawn(move || {
                        for m in input {
                            tx.send(m).unwrap();
                        }
                    });
                }
            }
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
    for (input, name) in [(Input::Slice, "slice"), (Input::Owned, "owned")] {
        for producers in [1usize, 2] {
            group.bench_with_input(
                BenchmarkId::new(format!("tidemark/{name}"), producers),
                &producers,
                |b, &p| b.iter_custom(|iters| (0..iters).map(|_| run_tidemark(p, input)).sum()),
            );
            group.bench_with_input(
                BenchmarkId::new(format!("crossbeam+vec/{name}"), producers),
                &producers,
                |b, &p| b.iter_custom(|iters| (0..iters).map(|_| run_baseline(p, input)).sum()),
            );
        }
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
    group.bench_function("tidemark_try_push_slice", |b| {
        let buffer = BatchBuffer::new(config()).unwrap();
        let input = packed(CHUNK as usize);
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let k = left.min(CHUNK);
                let start = Instant::now();
                for m in input.chunks_exact(MESSAGE_BYTES).take(k as usize) {
                    buffer.try_push_slice(m, None).unwrap();
                }
                total += start.elapsed();
                left -= k;
                let _ = buffer.flush(buffer.now());
                while let Poll::Ready(batch) = buffer.poll_batch(buffer.now()) {
                    buffer.ack(batch).unwrap();
                }
            }
            total
        })
    });
    group.bench_function("crossbeam_try_send_to_vec", |b| {
        let (tx, rx) = bounded::<Vec<u8>>(CAPACITY);
        let input = packed(CHUNK as usize);
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let k = left.min(CHUNK);
                let start = Instant::now();
                for m in input.chunks_exact(MESSAGE_BYTES).take(k as usize) {
                    tx.try_send(m.to_vec()).unwrap();
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
