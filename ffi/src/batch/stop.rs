//! Stopping a buffer and reading its stop report.

use std::sync::Arc;

use tidemark_core::batch::StopReport;

use crate::cast::{self};
use crate::tidemark_status;
use crate::types::*;

use super::{deadline, tidemark_batch_buffer, tidemark_stop_report};

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
        let (b, out) = unsafe { (super::buffer(buffer)?, cast::out(out_report)?) };
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
        let b = unsafe { super::buffer(buffer)? };
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
        let (b, out) = unsafe { (super::buffer(buffer)?, cast::out(out_report)?) };
        let report = b.poll_stop(b.now()).ok_or(tidemark_status::WouldBlock)?;
        out.write(cast::into_raw(report));
        Ok(())
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
