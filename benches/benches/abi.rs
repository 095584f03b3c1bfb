//! The cost of the C ABI: each operation called directly in Rust next to the same operation
//! through its `extern "C"` export (called through a function pointer hidden from the
//! optimiser, exactly as a C host calls it), side by side in one run. The C-side figures come
//! from `include/tests/abi_bench.c` (scripts/abi-bench.sh runs both).
//!
//! Workload per round: 256 writers each receive one commit (untimed), then report it flushed
//! (timed): one call per report, or `flushed_many` with n = 1, 16, 256. Pushes: 256 messages of
//! 16 bytes per round (timed), drained by an untimed poll + ack.
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use tidemark::batch::{BatchBuffer, BatchConfig, Message, Poll};
use tidemark::{Offset, Tracker, TrackerOptions, WriterId};
use tidemark_ffi::{
    tidemark_batch_buffer, tidemark_message, tidemark_offset, tidemark_status, tidemark_tracker,
};

const WRITERS: usize = 256;
const PAYLOAD: [u8; 16] = [7; 16];

type FlushedFn =
    unsafe extern "C" fn(*const tidemark_tracker, u64, tidemark_offset, u64) -> tidemark_status;
type FlushedManyFn = unsafe extern "C" fn(
    *const tidemark_tracker,
    *const u64,
    *const tidemark_offset,
    usize,
    u64,
    *mut tidemark_status,
    *mut usize,
) -> tidemark_status;
type PushFn =
    unsafe extern "C" fn(*const tidemark_batch_buffer, *const tidemark_message) -> tidemark_status;
type PushManyFn = unsafe extern "C" fn(
    *const tidemark_batch_buffer,
    *const tidemark_message,
    usize,
    *mut usize,
    *mut tidemark_status,
) -> tidemark_status;

/// A tracker made through the ABI (so both paths use one tracker) and its writers.
struct Fixture {
    handle: *mut tidemark_tracker,
    writers: Vec<u64>,
    next_tx: u64,
}

impl Fixture {
    fn new() -> Fixture {
        let mut o = std::mem::MaybeUninit::uninit();
        let mut handle = std::ptr::null_mut();
        // SAFETY: valid out-pointers; the options are initialised by the first call.
        unsafe {
            assert_eq!(
                tidemark_ffi::tidemark_tracker_options_default(o.as_mut_ptr()),
                tidemark_status::Ok
            );
            assert_eq!(
                tidemark_ffi::tidemark_tracker_new(o.as_ptr(), &mut handle),
                tidemark_status::Ok
            );
        }
        let mut writers = vec![0u64; WRITERS];
        for w in &mut writers {
            // SAFETY: a live handle and a valid out-pointer.
            let s = unsafe { tidemark_ffi::tidemark_tracker_register(handle, w) };
            assert_eq!(s, tidemark_status::Ok);
        }
        Fixture {
            handle,
            writers,
            next_tx: 1,
        }
    }

    /// One commit per writer; returns the offset each writer owes, in writer order.
    fn deliver(&mut self) -> Vec<tidemark_offset> {
        self.writers
            .iter()
            .map(|w| {
                let o = tidemark_offset {
                    tx: self.next_tx,
                    op: 0,
                };
                self.next_tx += 1;
                // SAFETY: a live handle; one readable writer id.
                let s = unsafe { tidemark_ffi::tidemark_tracker_commit(self.handle, o, w, 1, 0) };
                assert_eq!(s, tidemark_status::Ok);
                o
            })
            .collect()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // SAFETY: the handle is live and this is its last use.
        unsafe { tidemark_ffi::tidemark_tracker_free(self.handle) }
    }
}

/// The same workload on a tracker called directly (the baseline the ABI is compared with).
fn rust_fixture() -> (Tracker, Vec<WriterId>) {
    let t = Tracker::new(TrackerOptions::default()).unwrap();
    let ws = (0..WRITERS).map(|_| t.register().unwrap()).collect();
    (t, ws)
}

fn timed_rounds(iters: u64, mut round: impl FnMut() -> Duration) -> Duration {
    // `iters` counts items; a round handles WRITERS of them.
    let rounds = iters.div_ceil(WRITERS as u64).max(1);
    (0..rounds).map(|_| round()).sum::<Duration>() * (iters as u32).max(1)
        / (rounds * WRITERS as u64) as u32
}

fn bench_flushed(c: &mut Criterion) {
    let mut g = c.benchmark_group("abi_flushed");
    g.throughput(Throughput::Elements(1));
    g.bench_function("rust_direct", |b| {
        let (t, ws) = rust_fixture();
        let mut tx = 1;
        b.iter_custom(|iters| {
            timed_rounds(iters, || {
                let owed: Vec<Offset> = ws
                    .iter()
                    .map(|w| {
                        let o = Offset::new(tx, 0);
                        tx += 1;
                        t.commit(o, std::slice::from_ref(w), 0).unwrap();
                        o
                    })
                    .collect();
                let start = Instant::now();
                for (w, o) in ws.iter().zip(&owed) {
                    black_box(t.flushed(*w, *o, 1)).unwrap();
                }
                start.elapsed()
            })
        })
    });
    g.bench_function("c_abi_one_call_each", |b| {
        let mut f = Fixture::new();
        let call: FlushedFn = black_box(tidemark_ffi::tidemark_tracker_flushed);
        b.iter_custom(|iters| {
            timed_rounds(iters, || {
                let owed = f.deliver();
                let start = Instant::now();
                for (w, o) in f.writers.iter().zip(&owed) {
                    // SAFETY: a live handle.
                    let s = unsafe { call(f.handle, *w, *o, 1) };
                    debug_assert_eq!(s, tidemark_status::Ok);
                    black_box(s);
                }
                start.elapsed()
            })
        })
    });
    for n in [1usize, 16, 256] {
        g.bench_with_input(BenchmarkId::new("c_abi_flushed_many", n), &n, |b, &n| {
            let mut f = Fixture::new();
            let call: FlushedManyFn = black_box(tidemark_ffi::tidemark_tracker_flushed_many);
            let mut statuses = vec![tidemark_status::Ok; n];
            b.iter_custom(|iters| {
                timed_rounds(iters, || {
                    let owed = f.deliver();
                    let start = Instant::now();
                    for (ws, os) in f.writers.chunks(n).zip(owed.chunks(n)) {
                        let mut failed = 0;
                        // SAFETY: a live handle; arrays of `ws.len()` elements.
                        let s = unsafe {
                            call(
                                f.handle,
                                ws.as_ptr(),
                                os.as_ptr(),
                                ws.len(),
                                1,
                                statuses.as_mut_ptr(),
                                &mut failed,
                            )
                        };
                        debug_assert!(s == tidemark_status::Ok && failed == 0);
                        black_box(s);
                    }
                    start.elapsed()
                })
            })
        });
    }
    g.finish();
}

/// The cheapest call (one atomic load behind it), so the crossing itself is what is measured.
fn bench_ack(c: &mut Criterion) {
    let mut g = c.benchmark_group("abi_ack");
    g.throughput(Throughput::Elements(1));
    let (t, ws) = rust_fixture();
    t.commit(Offset::new(5, 0), &ws[..1], 0).unwrap();
    let t = Box::new(t); // on the heap, like the tracker behind a handle
    g.bench_function("rust_direct", |b| {
        b.iter(|| black_box(black_box(&*t).ack()))
    });
    let mut f = Fixture::new();
    f.deliver(); // so the ack exists on both sides
    type AckFn = unsafe extern "C" fn(*const tidemark_tracker, *mut u64) -> tidemark_status;
    let call: AckFn = black_box(tidemark_ffi::tidemark_tracker_ack);
    let mut out = 0u64;
    g.bench_function("c_abi", |b| {
        b.iter(|| {
            // SAFETY: a live handle and a valid out-pointer.
            black_box(unsafe { call(black_box(f.handle), &mut out) })
        })
    });
    g.finish();
}

fn buffer_config() -> BatchConfig {
    let mut c = BatchConfig::default();
    c.max_messages = WRITERS;
    c.linger = Duration::from_secs(3600);
    c.capacity_messages = 4 * WRITERS;
    c
}

fn drain(b: &BatchBuffer) {
    while let Poll::Ready(batch) = b.poll_batch(b.now()) {
        b.ack(batch).unwrap();
    }
}

fn bench_push(c: &mut Criterion) {
    let mut g = c.benchmark_group("abi_push");
    g.throughput(Throughput::Elements(1));
    g.bench_function("rust_direct", |bch| {
        let b = BatchBuffer::new(buffer_config()).unwrap();
        bch.iter_custom(|iters| {
            timed_rounds(iters, || {
                let start = Instant::now();
                for _ in 0..WRITERS {
                    black_box(b.try_push(PAYLOAD.to_vec(), Some(Offset::new(1, 0)))).unwrap();
                }
                let t = start.elapsed();
                drain(&b);
                t
            })
        })
    });
    g.bench_function("rust_push_many_256", |bch| {
        let b = BatchBuffer::new(buffer_config()).unwrap();
        bch.iter_custom(|iters| {
            timed_rounds(iters, || {
                let start = Instant::now();
                let ms = (0..WRITERS)
                    .map(|_| Message::with_offset(PAYLOAD.to_vec(), Offset::new(1, 0)))
                    .collect();
                black_box(b.push_many(ms)).unwrap();
                let t = start.elapsed();
                drain(&b);
                t
            })
        })
    });
    // The ABI paths push into a buffer made through the ABI and drain it through the ABI.
    let abi_buffer = || {
        let rust = buffer_config();
        let mut c = std::mem::MaybeUninit::uninit();
        let mut h = std::ptr::null_mut();
        // SAFETY: valid out-pointers; the config is initialised by the first call.
        unsafe {
            assert_eq!(
                tidemark_ffi::tidemark_batch_config_default(c.as_mut_ptr()),
                tidemark_status::Ok
            );
            let mut c = c.assume_init();
            c.max_messages = rust.max_messages;
            c.linger_us = rust.linger.as_micros() as u64;
            c.capacity_messages = rust.capacity_messages;
            assert_eq!(
                tidemark_ffi::tidemark_batch_buffer_new(&c, &mut h),
                tidemark_status::Ok
            );
        }
        h
    };
    let abi_drain = |h: *mut tidemark_batch_buffer| loop {
        let mut batch = std::ptr::null_mut();
        let mut wait = 0;
        // SAFETY: a live handle; valid out-pointers; the batch is consumed by the ack.
        unsafe {
            if tidemark_ffi::tidemark_batch_buffer_poll_batch(h, &mut batch, &mut wait)
                != tidemark_status::Ok
            {
                break;
            }
            assert_eq!(
                tidemark_ffi::tidemark_batch_buffer_ack(h, batch),
                tidemark_status::Ok
            );
        }
    };
    let message = tidemark_message {
        data: PAYLOAD.as_ptr(),
        len: PAYLOAD.len(),
        offset: tidemark_offset { tx: 1, op: 0 },
        has_offset: true.into(),
    };
    g.bench_function("c_abi_try_push", |bch| {
        let h = abi_buffer();
        let call: PushFn = black_box(tidemark_ffi::tidemark_batch_buffer_try_push);
        bch.iter_custom(|iters| {
            timed_rounds(iters, || {
                let start = Instant::now();
                for _ in 0..WRITERS {
                    // SAFETY: a live handle; a valid message.
                    black_box(unsafe { call(h, &message) });
                }
                let t = start.elapsed();
                abi_drain(h);
                t
            })
        });
        // SAFETY: last use of the handle.
        unsafe { tidemark_ffi::tidemark_batch_buffer_free(h) };
    });
    g.bench_function("c_abi_push_many_256", |bch| {
        let h = abi_buffer();
        let call: PushManyFn = black_box(tidemark_ffi::tidemark_batch_buffer_push_many);
        let messages = vec![message; WRITERS];
        bch.iter_custom(|iters| {
            timed_rounds(iters, || {
                let (mut accepted, mut refusal) = (0, tidemark_status::Ok);
                let start = Instant::now();
                // SAFETY: a live handle; WRITERS valid messages; valid out-pointers.
                black_box(unsafe {
                    call(h, messages.as_ptr(), WRITERS, &mut accepted, &mut refusal)
                });
                let t = start.elapsed();
                debug_assert_eq!(accepted, WRITERS);
                abi_drain(h);
                t
            })
        });
        // SAFETY: last use of the handle.
        unsafe { tidemark_ffi::tidemark_batch_buffer_free(h) };
    });
    g.finish();
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    bench_ack(&mut c);
    bench_flushed(&mut c);
    bench_push(&mut c);
    c.final_summary();
}
