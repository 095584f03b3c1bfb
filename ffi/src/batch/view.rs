//! A taken batch: its summary, messages, borrowed view, payload copy, release.

use tidemark_core::batch::Batch;

use crate::cast::{self};
use crate::tidemark_status;
use crate::types::*;

use super::tidemark_batch;

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
