//! Producer calls: one message, a blocking push, many messages, a packed buffer.

use tidemark_core::batch::{BatchBuffer, MessageRef, PushRefusal};

use crate::cast::{self};
use crate::tidemark_status;
use crate::types::*;

use super::{ms, tidemark_batch_buffer};

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
        let (b, m) = unsafe { (super::buffer(buffer)?, cast::input(message)?) };
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
        let (b, m) = unsafe { (super::buffer(buffer)?, cast::input(message)?) };
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
                super::buffer(buffer)?,
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
                super::buffer(buffer)?,
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
