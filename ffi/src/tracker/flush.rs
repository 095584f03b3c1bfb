//! Commits and flush reports: `tidemark_tracker_commit`, `_flushed`, `_flushed_many`, `_remove`.

use tidemark_core::WriterId;

use super::{tidemark_tracker, tracker};
use crate::cast;
use crate::tidemark_status;
use crate::types::*;

/// Hands a commit (its last offset) to the tracker with the `n` writers it was delivered to
/// (`writers` may be NULL when `n` is 0). `offset.tx` must exceed the previous commit's
/// (`OFFSET_REGRESSED`; `INVALID_ARGUMENT` for `UINT64_MAX`); every writer must be registered
/// (`UNKNOWN_WRITER`) and not evicted (`EVICTED_WRITER`). A refused commit changes nothing.
/// Commits from several threads are serialised, not ordered: commit from one thread.
///
/// # Safety
/// - `tracker` is NULL or a live tracker handle (not freed, and not freed during the call).
/// - `writers` is NULL or points to `n` readable `tidemark_writer_id`, untouched by others during the call (may be NULL when `n` is 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidemark_tracker_commit(
    tracker: *const tidemark_tracker,
    offset: tidemark_offset,
    writers: *const tidemark_writer_id,
    n: usize,
    now_ms: u64,
) -> tidemark_status {
    boundary!({
        // SAFETY: C contract: a live handle; `n` readable ids (or n == 0).
        let (t, ids) = unsafe { (self::tracker(tracker)?, cast::slice(writers, n)?) };
        // `WriterId` is a plain u64 in the core; small commits avoid an allocation.
        let mut small = [WriterId::from_raw(0); 8];
        let owned: Vec<WriterId>;
        let ids: &[WriterId] = if ids.len() <= small.len() {
            for (d, s) in small.iter_mut().zip(ids) {
                *d = WriterId::from_raw(*s);
            }
            &small[..ids.len()]
        } else {
            owned = ids.iter().map(|&w| WriterId::from_raw(w)).collect();
            &owned
        };
        Ok(t.commit(offset.into(), ids, now_ms)?)
    })
}

/// Reports that `writer` flushed everything up to `offset`. The ack may advance before this
/// returns (or, when another thread is draining, on that thread's next pass). A report at or
/// above the last commit delivered to the writer completes it; a lower one is progress (it
/// re-arms the grace period); one below an earlier report, or from a writer that owes nothing,
/// is accepted and changes nothing. `UNKNOWN_WRITER` / `EVICTED_WRITER` as for commit.
///
/// # Safety
/// - `tracker` is NULL or a live tracker handle (not freed, and not freed during the call).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidemark_tracker_flushed(
    tracker: *const tidemark_tracker,
    writer: tidemark_writer_id,
    offset: tidemark_offset,
    now_ms: u64,
) -> tidemark_status {
    boundary!({
        // SAFETY: C contract.
        let t = unsafe { self::tracker(tracker)? };
        Ok(t.flushed(WriterId::from_raw(writer), offset.into(), now_ms)?)
    })
}

/// `n` flush reports in one call: `writers[i]` flushed up to `offsets[i]`, applied in order.
/// Returns `OK` once every item was attempted; `statuses[i]` receives each item's status (what
/// `tidemark_tracker_flushed` would return) and `*out_failed` the number of items that were not
/// `OK`. The three arrays may be NULL when `n` is 0; `out_failed` must not be NULL.
///
/// # Safety
/// - `tracker` is NULL or a live tracker handle (not freed, and not freed during the call).
/// - `writers` is NULL or points to `n` readable `tidemark_writer_id` (may be NULL when `n` is 0).
/// - `offsets` is NULL or points to `n` readable `tidemark_offset`, untouched by others during the call (may be NULL when `n` is 0).
/// - `statuses` is NULL or points to `n` writable `tidemark_status`, untouched by others during the call (may be NULL when `n` is 0).
/// - `out_failed` is NULL or points to writable memory for one `usize`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidemark_tracker_flushed_many(
    tracker: *const tidemark_tracker,
    writers: *const tidemark_writer_id,
    offsets: *const tidemark_offset,
    n: usize,
    now_ms: u64,
    statuses: *mut tidemark_status,
    out_failed: *mut usize,
) -> tidemark_status {
    boundary!({
        // SAFETY: C contract: a live handle, `n` readable ids and offsets, `n` writable statuses,
        // a writable count.
        let (t, ids, offs, mut st, out_failed) = unsafe {
            (
                self::tracker(tracker)?,
                cast::slice(writers, n)?,
                cast::slice(offsets, n)?,
                cast::slice_out(statuses, n)?,
                cast::out(out_failed)?,
            )
        };
        let mut failed = 0;
        for (i, (&w, &o)) in ids.iter().zip(offs).enumerate() {
            let s = match t.flushed(WriterId::from_raw(w), o.into(), now_ms) {
                Ok(()) => tidemark_status::Ok,
                Err(e) => {
                    failed += 1;
                    tracker_status(&e)
                }
            };
            st.set(i, s);
        }
        out_failed.write(failed);
        Ok(())
    })
}

/// Removes a writer on purpose: whatever it owes stops pinning the ack. No event is queued (the
/// host asked for it; a `CLEANUP`-class `tidemark_tracker_down` queues `REMOVED` instead). The
/// id stays registered (it may receive later commits; unregister it to free its slot).
///
/// # Safety
/// - `tracker` is NULL or a live tracker handle (not freed, and not freed during the call).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidemark_tracker_remove(
    tracker: *const tidemark_tracker,
    writer: tidemark_writer_id,
) -> tidemark_status {
    boundary!({
        // SAFETY: C contract.
        let t = unsafe { self::tracker(tracker)? };
        Ok(t.remove(WriterId::from_raw(writer))?)
    })
}
