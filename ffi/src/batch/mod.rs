//! Batch buffer exports: `tidemark_batch_buffer_*`, `tidemark_batch_*`, `tidemark_stop_report_*`.
//!
//! Threading: pushes may run on any number of threads at once. One sink takes batches
//! (`poll_batch` / `next_batch`) and gives them back (`ack` / `nack`); any thread may stop,
//! flush or read stats. `tidemark_batch_buffer_free` must be the last call on its handle.
//! Batch and stop-report handles are independent of their buffer: they stay valid after the
//! buffer is freed, until their own release.
//!
//! Time: timeouts are relative, in milliseconds, measured on the buffer's monotonic clock (the
//! one `tidemark_monotonic_ms` reads).

//!
//! Files: this one holds the handles, construction, release and stats; `push.rs` the producer
//! calls, `sink.rs` the sink's, `stop.rs` stopping and the stop report, `view.rs` a taken batch.

mod push;
mod sink;
mod stop;
mod view;

pub use push::*;
pub use sink::*;
pub use stop::*;
pub use view::*;

use std::sync::Arc;
use std::time::Duration;

use tidemark_core::WriterId;
use tidemark_core::batch::{Batch, BatchBuffer, BatchConfig, StopReport, TrackerLink};

use crate::cast::{self, Kind};
use crate::tidemark_status;
use crate::types::*;

/// A batch buffer: opaque; create with `tidemark_batch_buffer_new`, release with
/// `tidemark_batch_buffer_free`.
pub struct tidemark_batch_buffer {
    _opaque: [u8; 0],
}

/// A batch taken by the sink: opaque; give it back with `tidemark_batch_buffer_ack` or
/// `tidemark_batch_buffer_nack` (which release the handle), or release it with
/// `tidemark_batch_free`.
pub struct tidemark_batch {
    _opaque: [u8; 0],
}

/// The report of a stop: opaque; release it with `tidemark_stop_report_free`.
pub struct tidemark_stop_report {
    _opaque: [u8; 0],
}

impl Kind for BatchBuffer {
    type Opaque = tidemark_batch_buffer;
    fn magic() -> u64 {
        0x7469_6465_6275_6631 // "tidebuf1"
    }
}

impl Kind for Batch {
    type Opaque = tidemark_batch;
    fn magic() -> u64 {
        0x7469_6465_6261_7431 // "tidebat1"
    }
}

impl Kind for Arc<StopReport> {
    type Opaque = tidemark_stop_report;
    fn magic() -> u64 {
        0x7469_6465_7270_7431 // "tiderpt1"
    }
}

/// # Safety
/// `b` must be NULL or a handle from `tidemark_batch_buffer_new` that is not being freed.
unsafe fn buffer<'a>(b: *const tidemark_batch_buffer) -> Result<&'a BatchBuffer, tidemark_status> {
    // SAFETY: forwarded contract.
    unsafe { cast::borrow::<BatchBuffer>(b) }
}

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// The deadline `timeout_ms` from now on the buffer's clock; a timeout too large to add
/// (`UINT64_MAX` as "no deadline") saturates instead of overflowing.
fn deadline(b: &BatchBuffer, timeout_ms: u64) -> Duration {
    b.now().checked_add(ms(timeout_ms)).unwrap_or(Duration::MAX)
}

/// Fills `*out` with the default configuration: 512 messages / 1 MiB / 5 ms per batch,
/// 65 536 messages and 64 MiB held, 4 batches in flight, no tracker link.
///
/// # Safety
/// - `out` is NULL or points to writable memory for one `tidemark_batch_config`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidemark_batch_config_default(
    out: *mut tidemark_batch_config,
) -> tidemark_status {
    boundary!({
        // SAFETY: C contract: NULL or a writable config.
        let out = unsafe { cast::out(out)? };
        let d = BatchConfig::default();
        out.write(tidemark_batch_config {
            max_messages: d.max_messages,
            max_bytes: d.max_bytes,
            linger_us: d.linger.as_micros() as u64,
            capacity_messages: d.capacity_messages,
            capacity_bytes: d.capacity_bytes,
            max_inflight_batches: d.max_inflight_batches,
            link_tracker: std::ptr::null(),
            link_writer: 0,
        });
        Ok(())
    })
}

/// Creates a batch buffer. On `OK`, `*out` receives a new handle the caller owns: stop it
/// (`tidemark_batch_buffer_stop`) to get every message delivered or handed back, then release
/// it with `tidemark_batch_buffer_free`. `INVALID_ARGUMENT` when a field is 0, a capacity is
/// below one batch, or above its maximum; `INVALID_HANDLE` when `link_tracker` is not a
/// tracker.
///
/// # Safety
/// - `config` is NULL or points to a valid `tidemark_batch_config`.
/// - `out` is NULL or points to writable memory for one pointer (it receives a new batch buffer handle).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidemark_batch_buffer_new(
    config: *const tidemark_batch_config,
    out: *mut *mut tidemark_batch_buffer,
) -> tidemark_status {
    boundary!({
        // SAFETY: C contract: NULL or a valid config; NULL or a writable pointer.
        let (c, out) = unsafe { (cast::input(config)?, cast::out(out)?) };
        let mut config = BatchConfig::default();
        config.max_messages = c.max_messages;
        config.max_bytes = c.max_bytes;
        config.linger = Duration::from_micros(c.linger_us);
        config.capacity_messages = c.capacity_messages;
        config.capacity_bytes = c.capacity_bytes;
        config.max_inflight_batches = c.max_inflight_batches;
        if !c.link_tracker.is_null() {
            // SAFETY: C contract: a live tracker handle when not NULL.
            let t = unsafe { crate::tracker::tracker(c.link_tracker)? };
            let link = TrackerLink::new(Arc::clone(t), WriterId::from_raw(c.link_writer));
            config.flush_link = Some(Arc::new(link));
        }
        let b = BatchBuffer::new(config).map_err(|_| tidemark_status::InvalidArgument)?;
        out.write(cast::into_raw(b));
        Ok(())
    })
}

/// Releases a batch buffer. NULL is a no-op. It must be the last call on this handle; frees of
/// distinct handles may run concurrently. A buffer that was not stopped is stopped at once
/// with no grace: what it still holds is handed back to nobody and a warning naming the count
/// is printed on stderr — stop it first (`tidemark_batch_buffer_stop`) to receive those
/// messages. Outstanding batch and stop-report handles stay valid.
///
/// # Safety
/// - `buffer` is NULL or a live batch buffer handle that no other call uses during or after this one.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidemark_batch_buffer_free(buffer: *mut tidemark_batch_buffer) {
    boundary_void!({
        if !buffer.is_null() {
            // SAFETY: C contract: a live handle, and no other call uses it now or later.
            // (A foreign or freed handle is refused by `take`: nothing to drop then.)
            if let Ok(b) = unsafe { cast::take::<BatchBuffer>(buffer) } {
                // The notify callback is not called from inside the free (a running buffer's
                // drop stops it, which would notify): the host may be tearing `ctx` down.
                b.set_notifier(None);
                drop(b);
            }
        }
    })
}

/// On `OK`, `*out` receives the buffer's counters and gauges.
///
/// # Safety
/// - `buffer` is NULL or a live batch buffer handle (not freed, and not freed during the call).
/// - `out` is NULL or points to writable memory for one `tidemark_batch_buffer_counters`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidemark_batch_buffer_stats(
    buffer: *const tidemark_batch_buffer,
    out: *mut tidemark_batch_buffer_counters,
) -> tidemark_status {
    boundary!({
        // SAFETY: C contract on both pointers.
        let (b, out) = unsafe { (self::buffer(buffer)?, cast::out(out)?) };
        let s = b.stats();
        out.write(tidemark_batch_buffer_counters {
            accepted: s.accepted,
            rejected_full: s.rejected_full,
            rejected_stopping: s.rejected_stopping,
            rejected_closed: s.rejected_closed,
            rejected_too_large: s.rejected_too_large,
            batches: s.batches_by_count
                + s.batches_by_bytes
                + s.batches_by_linger
                + s.batches_by_flush
                + s.batches_by_stop,
            delivered: s.delivered,
            failed: s.failed,
            requeued: s.requeued,
            handed_back: s.handed_back,
            queued_messages: s.queued_messages,
            queued_bytes: s.queued_bytes,
            in_flight_batches: s.in_flight_batches,
            in_flight_messages: s.in_flight_messages,
            link_errors: s.link_errors,
        });
        Ok(())
    })
}
