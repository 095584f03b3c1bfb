//! Sink calls: polling and blocking takes, the notify callback, ack and nack, flush.

use std::sync::Arc;

use tidemark_core::batch::{AckError, Batch, FlushError, Poll, TakeError};

use crate::cast::{self};
use crate::tidemark_status;

use super::{deadline, ms, tidemark_batch, tidemark_batch_buffer};

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
                super::buffer(buffer)?,
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
        let b = unsafe { super::buffer(buffer)? };
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
                super::buffer(buffer)?,
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
        let (b, out_batch) = unsafe { (super::buffer(buffer)?, cast::out(out_batch)?) };
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
        let (b, batch) = unsafe { (super::buffer(buffer)?, cast::take::<Batch>(batch)?) };
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
        let (b, batch) = unsafe { (super::buffer(buffer)?, cast::take::<Batch>(batch)?) };
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
        let b = unsafe { super::buffer(buffer)? };
        b.flush(deadline(b, timeout_ms)).map_err(|e| match e {
            FlushError::Timeout => tidemark_status::Timeout,
            FlushError::Closed => tidemark_status::Closed,
        })
    })
}
