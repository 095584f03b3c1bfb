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

use std::sync::Arc;
use std::time::Duration;

use tidemark_core::WriterId;
use tidemark_core::batch::{
    AckError, Batch, BatchBuffer, BatchConfig, FlushError, MessageRef, Poll, PushRefusal,
    StopReport, TakeError, TrackerLink,
};

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

/// Borrows a caller's message, after checking that the buffer could ever hold it: a message
/// above `capacity_bytes` (a lying length included) is refused as `TOO_LARGE` before any byte
/// is read.
///
/// # Safety
/// `m.data` must be NULL or point to `m.len` readable bytes (when `m.len` fits the buffer),
/// for the lifetime `'a`.
unsafe fn borrowed<'a>(
    b: &BatchBuffer,
    m: &'a tidemark_message,
) -> Result<MessageRef<'a>, tidemark_status> {
    if m.len as u64 > b.capacity_bytes() {
        b.count_refused(PushRefusal::TooLarge, 1);
        return Err(tidemark_status::TooLarge);
    }
    let offset = m.offset()?;
    // SAFETY: forwarded contract.
    let payload = unsafe { cast::slice(m.data, m.len)? };
    Ok(MessageRef { payload, offset })
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

/// Accepts a copy of `*message` without blocking. The caller keeps its bytes in every case.
/// `FULL` (retry later), `STOPPING`, `CLOSED`, `TOO_LARGE` (above `capacity_bytes`): the
/// message was not taken.
///
/// # Safety
/// - `buffer` is NULL or a live batch buffer handle (not freed, and not freed during the call).
/// - `message` is NULL or points to a valid `tidemark_message` (with `data` readable for `len` bytes).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidemark_batch_buffer_try_push(
    buffer: *const tidemark_batch_buffer,
    message: *const tidemark_message,
) -> tidemark_status {
    boundary!({
        // SAFETY: C contract: a live handle; a valid message whose bytes are readable.
        let (b, m) = unsafe { (self::buffer(buffer)?, cast::input(message)?) };
        // SAFETY: as above (the bytes are read only once the length fits the buffer).
        let m = unsafe { borrowed(b, m)? };
        b.try_push_slice(m.payload, m.offset)
            .map_err(refusal_status)
    })
}

/// Like `tidemark_batch_buffer_try_push`, but waits up to `timeout_ms` while the buffer is
/// full (`FULL` after that). Blocking: not for BEAM schedulers.
///
/// # Safety
/// - `buffer` is NULL or a live batch buffer handle (not freed, and not freed during the call).
/// - `message` is NULL or points to a valid `tidemark_message` (with `data` readable for `len` bytes).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidemark_batch_buffer_push_timeout(
    buffer: *const tidemark_batch_buffer,
    message: *const tidemark_message,
    timeout_ms: u64,
) -> tidemark_status {
    boundary!({
        // SAFETY: C contract: as for try_push.
        let (b, m) = unsafe { (self::buffer(buffer)?, cast::input(message)?) };
        // SAFETY: as above (the bytes are read only once the length fits the buffer).
        let m = unsafe { borrowed(b, m)? };
        b.push_slice_timeout(m.payload, m.offset, ms(timeout_ms))
            .map_err(refusal_status)
    })
}

/// Accepts copies of the longest prefix of `messages[0..n)` that fits, in one reservation, never
/// blocking. Returns `OK` once the call ran: `*out_accepted` receives how many messages (from
/// the front) were taken, and `*out_refusal` `OK` when all were, or why the first one left was
/// refused (`FULL`, `STOPPING`, `CLOSED`, `TOO_LARGE`). The caller keeps every message's bytes.
/// `messages` may be NULL when `n` is 0. Malformed input refuses the whole call, with nothing
/// taken and nothing written: `INVALID_ARGUMENT` for a `has_offset` byte other than 0 or 1,
/// `NULL_ARGUMENT` for NULL `data` with a non-zero `len` (among the messages the buffer could
/// hold at all: lengths are checked first, and bytes past the first refused message are never
/// read).
///
/// # Safety
/// - `buffer` is NULL or a live batch buffer handle (not freed, and not freed during the call).
/// - `messages` is NULL or points to `n` readable `tidemark_message` (each message's `data` readable for `len` bytes), untouched by others during the call (may be NULL when `n` is 0).
/// - `out_accepted` is NULL or points to writable memory for one `usize`.
/// - `out_refusal` is NULL or points to writable memory for one `tidemark_status`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidemark_batch_buffer_push_many(
    buffer: *const tidemark_batch_buffer,
    messages: *const tidemark_message,
    n: usize,
    out_accepted: *mut usize,
    out_refusal: *mut tidemark_status,
) -> tidemark_status {
    boundary!({
        // SAFETY: C contract: a live handle; `n` valid messages with readable bytes; two
        // writable results.
        let (b, ms, out_accepted, out_refusal) = unsafe {
            (
                self::buffer(buffer)?,
                cast::slice(messages, n)?,
                cast::out(out_accepted)?,
                cast::out(out_refusal)?,
            )
        };
        // Lengths first: only the prefix the buffer could hold at all (each message within
        // `capacity_bytes`, and all of them together within the capacities) is copied. The first
        // message past it is refused: `TOO_LARGE` when it can never fit; otherwise it is passed
        // on too (its length is within `capacity_bytes`), so the buffer itself refuses it.
        let (cap_bytes, cap_msgs) = (b.capacity_bytes(), b.capacity_messages());
        let mut total = 0u64;
        let mut take = n;
        let mut too_large = false;
        for (i, m) in ms.iter().enumerate() {
            m.offset()?;
            if m.len as u64 > cap_bytes {
                (take, too_large) = (i, true);
                break;
            }
            total = total.saturating_add(m.len as u64);
            if total > cap_bytes || i as u64 >= cap_msgs {
                take = i + 1;
                break;
            }
        }
        let refs = ms[..take]
            .iter()
            // SAFETY: C contract: each message's bytes are readable; lengths checked above.
            .map(|m| unsafe { borrowed(b, m) })
            .collect::<Result<Vec<_>, _>>()?;
        // The messages never passed on are refused with the reason of the first refused one.
        let unpassed = (n - take) as u64;
        let (accepted, reason) = if refs.is_empty() {
            (0, (n > 0).then_some(PushRefusal::TooLarge))
        } else {
            match b.push_refs(&refs) {
                (k, None) => (k, too_large.then_some(PushRefusal::TooLarge)),
                (k, Some(r)) => (k, Some(r)),
            }
        };
        let refusal = match reason {
            Some(r) => {
                if unpassed > 0 {
                    b.count_refused(r, unpassed);
                }
                refusal_status(r)
            }
            None => tidemark_status::Ok,
        };
        out_accepted.write(accepted);
        out_refusal.write(refusal);
        Ok(())
    })
}

/// Accepts copies of the longest prefix of `n` messages packed in one payload buffer (one
/// reservation per 64 messages), never blocking: message `i` is the next `descs[i].len` bytes of `payload`
/// (messages back to back, in order) with `descs[i]`'s offset. No per-message allocation: the
/// bytes are copied straight into the buffer's arena. Returns `OK` once the call ran:
/// `*out_accepted` receives how many messages (from the front) were taken, and
/// `*out_refusal` `OK` when all were, or why the first one left was refused (`FULL`,
/// `STOPPING`, `CLOSED`, `TOO_LARGE`). The caller keeps its buffers. Malformed input refuses
/// the whole call, with nothing taken and nothing written: `INVALID_ARGUMENT` when the lengths
/// do not add up to exactly `payload_len` or a `has_offset` byte is neither 0 nor 1;
/// `NULL_ARGUMENT` for NULL `payload` with a non-zero `payload_len` (or NULL `descs` with a
/// non-zero `n`).
///
/// # Safety
/// - `buffer` is NULL or a live batch buffer handle (not freed, and not freed during the call).
/// - `payload` is NULL or points to `payload_len` readable bytes, untouched by others during the call.
/// - `descs` is NULL or points to `n` readable `tidemark_msg_desc`, untouched by others during the call (may be NULL when `n` is 0).
/// - `out_accepted` is NULL or points to writable memory for one `usize`.
/// - `out_refusal` is NULL or points to writable memory for one `tidemark_status`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidemark_batch_buffer_push_packed(
    buffer: *const tidemark_batch_buffer,
    payload: *const u8,
    payload_len: usize,
    descs: *const tidemark_msg_desc,
    n: usize,
    out_accepted: *mut usize,
    out_refusal: *mut tidemark_status,
) -> tidemark_status {
    boundary!({
        // SAFETY: C contract: a live handle; `payload_len` readable bytes; `n` readable
        // descriptors; two writable results.
        let (b, bytes, ds, out_accepted, out_refusal) = unsafe {
            (
                self::buffer(buffer)?,
                cast::slice(payload, payload_len)?,
                cast::slice(descs, n)?,
                cast::out(out_accepted)?,
                cast::out(out_refusal)?,
            )
        };
        // Validate everything first (lengths must tile the payload exactly).
        let mut total = 0u64;
        for d in ds {
            d.has_offset.get()?;
            total = total
                .checked_add(d.len)
                .ok_or(tidemark_status::InvalidArgument)?;
        }
        if total != payload_len as u64 {
            return Err(tidemark_status::InvalidArgument);
        }
        // In chunks on the stack: no allocation, whatever `n` is.
        const CHUNK: usize = 64;
        let mut refs = [MessageRef::new(&[]); CHUNK];
        let (mut at, mut accepted, mut refusal) = (0usize, 0usize, tidemark_status::Ok);
        for chunk in ds.chunks(CHUNK) {
            for (r, d) in refs.iter_mut().zip(chunk) {
                let len = d.len as usize; // fits: the lengths add up to payload_len
                *r = MessageRef {
                    payload: &bytes[at..at + len],
                    offset: d.offset()?,
                };
                at += len;
            }
            let (k, reason) = b.push_refs(&refs[..chunk.len()]);
            accepted += k;
            if let Some(r) = reason {
                refusal = refusal_status(r);
                // The messages of later chunks are refused for the same reason.
                let later = (n - accepted - (chunk.len() - k)) as u64;
                if later > 0 {
                    b.count_refused(r, later);
                }
                break;
            }
        }
        out_accepted.write(accepted);
        out_refusal.write(refusal);
        Ok(())
    })
}

/// The sink's non-blocking take. `OK`: `*out_batch` receives a batch the caller owns (give it
/// back with ack or nack). `WOULD_BLOCK`: nothing ready; `*out_wait_us` receives the time until
/// the next linger deadline, or `UINT64_MAX` when none is pending (poll again after a push or
/// an ack). `CLOSED`: the buffer is closed; nothing more will come.
///
/// # Safety
/// - `buffer` is NULL or a live batch buffer handle (not freed, and not freed during the call).
/// - `out_batch` is NULL or points to writable memory for one pointer (it receives a new batch handle).
/// - `out_wait_us` is NULL or points to writable memory for one `u64`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidemark_batch_buffer_poll_batch(
    buffer: *const tidemark_batch_buffer,
    out_batch: *mut *mut tidemark_batch,
    out_wait_us: *mut u64,
) -> tidemark_status {
    boundary!({
        // SAFETY: C contract: a live handle; two writable results.
        let (b, out_batch, out_wait) = unsafe {
            (
                self::buffer(buffer)?,
                cast::out(out_batch)?,
                cast::out(out_wait_us)?,
            )
        };
        poll_result(b.poll_batch(b.now()), out_batch, out_wait)
    })
}

/// A notification callback (see `tidemark_batch_buffer_set_notify`): called with the `ctx`
/// it was registered with.
pub type tidemark_notify_fn = Option<unsafe extern "C" fn(ctx: *mut std::ffi::c_void)>;

/// The registered callback and its context, callable from any thread.
struct CNotify {
    f: unsafe extern "C" fn(*mut std::ffi::c_void),
    ctx: *mut std::ffi::c_void,
}

impl CNotify {
    fn call(&self) {
        // SAFETY: `tidemark_batch_buffer_set_notify`'s contract: callable from any thread with
        // `ctx` while the buffer lives (and the buffer owns this value).
        unsafe { (self.f)(self.ctx) }
    }
}

// SAFETY: `tidemark_batch_buffer_set_notify`'s contract makes the callback callable from any
// thread with `ctx`, for as long as the buffer lives.
unsafe impl Send for CNotify {}
// SAFETY: as for `Send`: concurrent calls are allowed by the same contract.
unsafe impl Sync for CNotify {}

/// Registers (or with a NULL `f` removes) the callback that tells an armed sink to look again
/// (see `tidemark_batch_buffer_poll_batch_notify`). `f(ctx)` runs on the thread whose call made
/// the batch due (a push, an ack or nack, a stop: any thread), after the buffer's locks are
/// released; it must only signal (send a message, write to a pipe, post a semaphore) and must
/// not block, unwind, or call back into this buffer. `ctx` must stay valid until the buffer is
/// freed (a call already under way when the callback is replaced may still use the old one);
/// `tidemark_batch_buffer_free` removes the callback first, so it never runs inside the free.
///
/// # Safety
/// - `buffer` is NULL or a live batch buffer handle (not freed, and not freed during the call).
/// - `f` is NULL or a function callable from any thread with `ctx` until the buffer is freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidemark_batch_buffer_set_notify(
    buffer: *const tidemark_batch_buffer,
    f: tidemark_notify_fn,
    ctx: *mut std::ffi::c_void,
) -> tidemark_status {
    boundary!({
        // SAFETY: C contract: a live handle.
        let b = unsafe { self::buffer(buffer)? };
        let notifier = f.map(|f| {
            let n = CNotify { f, ctx };
            let call: tidemark_core::batch::Notifier = Arc::new(move || n.call());
            call
        });
        b.set_notifier(notifier);
        Ok(())
    })
}

/// The sink's non-blocking take for hosts without a thread to block (a BEAM process, an event
/// loop): like `tidemark_batch_buffer_poll_batch`, and on `WOULD_BLOCK` it also *arms* the
/// notify callback, which is then called once: when a push reaches a size trigger (or, with
/// nothing buffered, the first message arrives), or an ack, nack or stop changes what the sink
/// may do. Linger deadlines are not notified: `*out_wait_us` says when to poll again
/// (`UINT64_MAX`: only on notification). One exception: while a producer has reserved but not
/// yet published (a window of a few instructions), the call returns `WOULD_BLOCK` with a wait
/// of at most 50 µs *without* arming: the host polls again after that wait. So the sink loops: poll-notify; on `WOULD_BLOCK`,
/// wait for the callback's signal or the wait time, whichever comes first. A signal may be
/// spurious; none is lost between the poll and the arming.
///
/// # Safety
/// - `buffer` is NULL or a live batch buffer handle (not freed, and not freed during the call).
/// - `out_batch` is NULL or points to writable memory for one pointer (it receives a new batch handle).
/// - `out_wait_us` is NULL or points to writable memory for one `u64`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidemark_batch_buffer_poll_batch_notify(
    buffer: *const tidemark_batch_buffer,
    out_batch: *mut *mut tidemark_batch,
    out_wait_us: *mut u64,
) -> tidemark_status {
    boundary!({
        // SAFETY: C contract: a live handle; two writable results.
        let (b, out_batch, out_wait) = unsafe {
            (
                self::buffer(buffer)?,
                cast::out(out_batch)?,
                cast::out(out_wait_us)?,
            )
        };
        poll_result(b.poll_batch_notify(b.now()), out_batch, out_wait)
    })
}

fn poll_result(
    poll: Poll,
    out_batch: cast::Out<*mut tidemark_batch>,
    out_wait: cast::Out<u64>,
) -> Result<(), tidemark_status> {
    match poll {
        Poll::Ready(batch) => {
            out_batch.write(cast::into_raw(batch));
            Ok(())
        }
        Poll::Wait(d) => {
            out_wait.write(d.map_or(u64::MAX, |d| d.as_micros().min(u64::MAX as u128 - 1) as u64));
            Err(tidemark_status::WouldBlock)
        }
        Poll::Closed => Err(tidemark_status::Closed),
    }
}

/// The sink's blocking take: waits up to `timeout_ms` for a batch. `OK`: `*out_batch` receives a
/// batch the caller owns. `TIMEOUT` or `CLOSED` otherwise. Blocking: not for BEAM schedulers.
///
/// # Safety
/// - `buffer` is NULL or a live batch buffer handle (not freed, and not freed during the call).
/// - `out_batch` is NULL or points to writable memory for one pointer (it receives a new batch handle).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidemark_batch_buffer_next_batch(
    buffer: *const tidemark_batch_buffer,
    timeout_ms: u64,
    out_batch: *mut *mut tidemark_batch,
) -> tidemark_status {
    boundary!({
        // SAFETY: C contract: a live handle; a writable result.
        let (b, out_batch) = unsafe { (self::buffer(buffer)?, cast::out(out_batch)?) };
        match b.next_batch(ms(timeout_ms)) {
            Ok(batch) => {
                out_batch.write(cast::into_raw(batch));
                Ok(())
            }
            Err(TakeError::Timeout) => Err(tidemark_status::Timeout),
            Err(TakeError::Closed) => Err(tidemark_status::Closed),
        }
    })
}

/// Acknowledges a delivered batch and releases the batch handle (in every case except
/// `NULL_ARGUMENT` / `INVALID_HANDLE`). `OK`; `LINK_FAILED` (delivered, but the linked tracker
/// refused the report, e.g. the writer was evicted); `NOT_IN_FLIGHT` (another buffer's batch, or
/// it was already handed back by a stop whose deadline passed: nothing changed).
///
/// # Safety
/// - `buffer` is NULL or a live batch buffer handle (not freed, and not freed during the call).
/// - `batch` is NULL or a live batch handle that no other call uses during or after this one.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidemark_batch_buffer_ack(
    buffer: *const tidemark_batch_buffer,
    batch: *mut tidemark_batch,
) -> tidemark_status {
    boundary!({
        // SAFETY: C contract: a live buffer; a live batch handle no other call is using.
        let (b, batch) = unsafe { (self::buffer(buffer)?, cast::take::<Batch>(batch)?) };
        b.ack(batch).map_err(ack_status)
    })
}

/// Gives a batch back and releases the batch handle (in every case except `NULL_ARGUMENT` /
/// `INVALID_HANDLE`). With `requeue`, its messages return ahead of newer ones, in order;
/// without, they are counted failed. `NOT_IN_FLIGHT` as for ack.
///
/// # Safety
/// - `buffer` is NULL or a live batch buffer handle (not freed, and not freed during the call).
/// - `batch` is NULL or a live batch handle that no other call uses during or after this one.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidemark_batch_buffer_nack(
    buffer: *const tidemark_batch_buffer,
    batch: *mut tidemark_batch,
    requeue: bool,
) -> tidemark_status {
    boundary!({
        // SAFETY: C contract: a live buffer; a live batch handle no other call is using.
        let (b, batch) = unsafe { (self::buffer(buffer)?, cast::take::<Batch>(batch)?) };
        b.nack(batch, requeue).map_err(ack_status)
    })
}

fn ack_status(e: AckError) -> tidemark_status {
    match e {
        AckError::NotInFlight(_) => tidemark_status::NotInFlight,
        AckError::Link(_) => tidemark_status::LinkFailed,
    }
}

/// Emits everything buffered now (ignoring linger) and waits up to `timeout_ms` until all of it
/// is acked or failed: `OK`, `TIMEOUT`, or `CLOSED` (the rest is in the stop report). With a
/// timeout of 0 it only marks the messages due and returns at once (`OK` only when nothing
/// was buffered). Needs the sink running on another thread. Blocking unless `timeout_ms` is 0.
///
/// # Safety
/// - `buffer` is NULL or a live batch buffer handle (not freed, and not freed during the call).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidemark_batch_buffer_flush(
    buffer: *const tidemark_batch_buffer,
    timeout_ms: u64,
) -> tidemark_status {
    boundary!({
        // SAFETY: C contract.
        let b = unsafe { self::buffer(buffer)? };
        b.flush(deadline(b, timeout_ms)).map_err(|e| match e {
            FlushError::Timeout => tidemark_status::Timeout,
            FlushError::Closed => tidemark_status::Closed,
        })
    })
}

/// Stops: closes admission, emits everything queued at once, gives batches in flight up to
/// `timeout_ms` to be acked, then hands back the rest. On `OK`, `*out_report` receives a report
/// the caller owns (release it with `tidemark_stop_report_free`); every caller of stop gets the
/// same report. Needs the sink running on another thread to deliver anything (without one,
/// everything is handed back at the deadline). Blocking: not for BEAM schedulers (use
/// `begin_stop` + `poll_stop`).
///
/// # Safety
/// - `buffer` is NULL or a live batch buffer handle (not freed, and not freed during the call).
/// - `out_report` is NULL or points to writable memory for one pointer (it receives a new stop report handle).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidemark_batch_buffer_stop(
    buffer: *const tidemark_batch_buffer,
    timeout_ms: u64,
    out_report: *mut *mut tidemark_stop_report,
) -> tidemark_status {
    boundary!({
        // SAFETY: C contract: a live handle; a writable result.
        let (b, out) = unsafe { (self::buffer(buffer)?, cast::out(out_report)?) };
        let report = b.stop(deadline(b, timeout_ms));
        out.write(cast::into_raw(report));
        Ok(())
    })
}

/// Starts a stop without waiting (admission closes at once; the deadline is `timeout_ms` from
/// now; the earliest of several stops wins). Follow with `tidemark_batch_buffer_poll_stop`.
///
/// # Safety
/// - `buffer` is NULL or a live batch buffer handle (not freed, and not freed during the call).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidemark_batch_buffer_begin_stop(
    buffer: *const tidemark_batch_buffer,
    timeout_ms: u64,
) -> tidemark_status {
    boundary!({
        // SAFETY: C contract.
        let b = unsafe { self::buffer(buffer)? };
        b.begin_stop(deadline(b, timeout_ms));
        Ok(())
    })
}

/// Non-blocking: `OK` with `*out_report` (a report the caller owns) once the stop finished;
/// `WOULD_BLOCK` while it drains or when no stop has begun.
///
/// # Safety
/// - `buffer` is NULL or a live batch buffer handle (not freed, and not freed during the call).
/// - `out_report` is NULL or points to writable memory for one pointer (it receives a new stop report handle).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidemark_batch_buffer_poll_stop(
    buffer: *const tidemark_batch_buffer,
    out_report: *mut *mut tidemark_stop_report,
) -> tidemark_status {
    boundary!({
        // SAFETY: C contract: a live handle; a writable result.
        let (b, out) = unsafe { (self::buffer(buffer)?, cast::out(out_report)?) };
        let report = b.poll_stop(b.now()).ok_or(tidemark_status::WouldBlock)?;
        out.write(cast::into_raw(report));
        Ok(())
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

/// On `OK`, `*out` receives the batch's summary.
///
/// # Safety
/// - `batch` is NULL or a live batch handle (not freed, and not freed during the call).
/// - `out` is NULL or points to writable memory for one `tidemark_batch_summary`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidemark_batch_info(
    batch: *const tidemark_batch,
    out: *mut tidemark_batch_summary,
) -> tidemark_status {
    boundary!({
        // SAFETY: C contract: a live batch handle; a writable result.
        let (b, out) = unsafe { (cast::borrow::<Batch>(batch)?, cast::out(out)?) };
        out.write(tidemark_batch_summary {
            id: b.id().get(),
            len: b.len(),
            bytes: b.bytes(),
            highest_offset: b.highest_offset().unwrap_or_default().into(),
            has_offset: b.highest_offset().is_some(),
            trigger: b.trigger().into(),
        });
        Ok(())
    })
}

/// Fills `out[0..len)` with views of the batch's messages, oldest first (`len` from
/// `tidemark_batch_info`); on `OK`, `*out_n` receives `len`. `BUFFER_TOO_SMALL` when `cap` is
/// below `len` (nothing written). The views point into the batch: valid until the batch handle
/// is released (ack, nack or `tidemark_batch_free`).
///
/// # Safety
/// - `batch` is NULL or a live batch handle (not freed, and not freed during the call).
/// - `out` is NULL or points to `cap` writable `tidemark_message`, untouched by others during the call (may be NULL when `cap` is 0).
/// - `out_n` is NULL or points to writable memory for one `usize`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidemark_batch_messages(
    batch: *const tidemark_batch,
    out: *mut tidemark_message,
    cap: usize,
    out_n: *mut usize,
) -> tidemark_status {
    boundary!({
        // SAFETY: C contract: a live batch; `cap` writable messages; a writable count.
        let (b, mut dst, out_n) = unsafe {
            (
                cast::borrow::<Batch>(batch)?,
                cast::slice_out(out, cap)?,
                cast::out(out_n)?,
            )
        };
        if dst.len() < b.len() {
            return Err(tidemark_status::BufferTooSmall);
        }
        for (i, m) in b.iter().enumerate() {
            dst.set(i, tidemark_message::view(m));
        }
        out_n.write(b.len());
        Ok(())
    })
}

/// On `OK`, `*out` receives a borrowed view of the whole batch in one call: every payload back
/// to back (`payload`, `payload_len` = the batch's `bytes`) and one descriptor per message
/// (`descs`, `len`), oldest first; message `i` is the next `descs[i].len` bytes. Nothing is
/// copied. The view points into the batch: valid until the batch handle is released (ack,
/// nack or `tidemark_batch_free`); do not write through it or free it.
///
/// # Safety
/// - `batch` is NULL or a live batch handle (not freed, and not freed during the call).
/// - `out` is NULL or points to writable memory for one `tidemark_batch_view`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidemark_batch_get_view(
    batch: *const tidemark_batch,
    out: *mut tidemark_batch_view,
) -> tidemark_status {
    boundary!({
        // SAFETY: C contract: a live batch handle; a writable result.
        let (b, out) = unsafe { (cast::borrow::<Batch>(batch)?, cast::out(out)?) };
        out.write(tidemark_batch_view {
            payload: b.payload_bytes().as_ptr(),
            payload_len: b.payload_bytes().len(),
            descs: tidemark_msg_desc::from_core(b.descs()).as_ptr(),
            len: b.len(),
        });
        Ok(())
    })
}

/// Copies every payload of the batch, back to back and oldest first, into `dst[0..cap)` (one
/// crossing for a host that wants its own copy; lengths come from `tidemark_batch_messages` or
/// are framed by the host). On `OK`, `*out_written` receives the byte count (`bytes` of the
/// batch info). `BUFFER_TOO_SMALL` when `cap` is below that (nothing written). `dst` may be NULL
/// when `cap` is 0.
///
/// # Safety
/// - `batch` is NULL or a live batch handle (not freed, and not freed during the call).
/// - `dst` is NULL or points to `cap` writable `u8`, untouched by others during the call (may be NULL when `cap` is 0).
/// - `out_written` is NULL or points to writable memory for one `usize`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidemark_batch_copy_payloads(
    batch: *const tidemark_batch,
    dst: *mut u8,
    cap: usize,
    out_written: *mut usize,
) -> tidemark_status {
    boundary!({
        // SAFETY: C contract: a live batch; `cap` writable bytes; a writable count.
        let (b, mut dst, out) = unsafe {
            (
                cast::borrow::<Batch>(batch)?,
                cast::slice_out(dst, cap)?,
                cast::out(out_written)?,
            )
        };
        // The batch already knows its payload bytes; a count above usize cannot fit any buffer.
        let total = usize::try_from(b.bytes()).map_err(|_| tidemark_status::BufferTooSmall)?;
        if dst.len() < total {
            return Err(tidemark_status::BufferTooSmall);
        }
        dst.copy_at(0, b.payload_bytes());
        out.write(total);
        Ok(())
    })
}

/// Releases a batch handle without acking or nacking it: the batch stays in flight in its
/// buffer and is handed back (outcome unknown) by the stop. NULL is a no-op.
///
/// # Safety
/// - `batch` is NULL or a live batch handle that no other call uses during or after this one.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidemark_batch_free(batch: *mut tidemark_batch) {
    boundary_void!({
        if !batch.is_null() {
            // SAFETY: C contract: a live batch handle no other call uses now or later.
            drop(unsafe { cast::take::<Batch>(batch) });
        }
    })
}

/// On `OK`, `*out` receives the report's counts.
///
/// # Safety
/// - `report` is NULL or a live stop report handle (not freed, and not freed during the call).
/// - `out` is NULL or points to writable memory for one `tidemark_stop_counts`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidemark_stop_report_counts(
    report: *const tidemark_stop_report,
    out: *mut tidemark_stop_counts,
) -> tidemark_status {
    boundary!({
        // SAFETY: C contract: a live report; a writable result.
        let (r, out) = unsafe { (cast::borrow::<Arc<StopReport>>(report)?, cast::out(out)?) };
        out.write(tidemark_stop_counts {
            accepted: r.accepted,
            delivered: r.delivered,
            failed: r.failed,
            handed_back: r.handed_back_count(),
            in_flight_unknown: r.in_flight_unknown,
            unknown_batches: r.unknown_batches.len() as u64,
            timed_out: r.timed_out,
        });
        Ok(())
    })
}

/// Fills `out` with handed-back messages `start..start + k` in their original order, where `k`
/// is the smaller of `cap` and what is left; on `OK`, `*out_n` receives `k` (0 past the end).
/// Page through with increasing `start`. The views point into the report: valid until it is
/// released. `out` may be NULL when `cap` is 0.
///
/// # Safety
/// - `report` is NULL or a live stop report handle (not freed, and not freed during the call).
/// - `out` is NULL or points to `cap` writable `tidemark_handed_back`, untouched by others during the call (may be NULL when `cap` is 0).
/// - `out_n` is NULL or points to writable memory for one `usize`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidemark_stop_report_handed_back(
    report: *const tidemark_stop_report,
    start: usize,
    out: *mut tidemark_handed_back,
    cap: usize,
    out_n: *mut usize,
) -> tidemark_status {
    boundary!({
        // SAFETY: C contract: a live report; `cap` writable entries; a writable count.
        let (r, mut dst, out_n) = unsafe {
            (
                cast::borrow::<Arc<StopReport>>(report)?,
                cast::slice_out(out, cap)?,
                cast::out(out_n)?,
            )
        };
        let rest = r.handed_back.get(start..).unwrap_or(&[]);
        let k = rest.len().min(dst.len());
        for (i, h) in rest[..k].iter().enumerate() {
            dst.set(
                i,
                tidemark_handed_back {
                    message: tidemark_message::view((&h.message).into()),
                    outcome_unknown: h.outcome_unknown,
                },
            );
        }
        out_n.write(k);
        Ok(())
    })
}

/// Releases a stop report (and the handed-back bytes it owns). NULL is a no-op.
///
/// # Safety
/// - `report` is NULL or a live stop report handle that no other call uses during or after this one.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidemark_stop_report_free(report: *mut tidemark_stop_report) {
    boundary_void!({
        if !report.is_null() {
            // SAFETY: C contract: a live report handle no other call uses now or later.
            drop(unsafe { cast::take::<Arc<StopReport>>(report) });
        }
    })
}
