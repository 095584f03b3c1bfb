//! Tracker exports: `tidemark_tracker_*`. This file holds the handle and its lifecycle (options,
//! new, free) and the writer table (register, unregister, writer status); `flush.rs` commits and
//! flush reports, `query.rs` the ack and the counters, `stale.rs` liveness and sweeps.
//!
//! Threading: every call on a live tracker may run concurrently with any other call on it,
//! except `tidemark_tracker_free`, which must be the last call on that handle. Commits from
//! several threads are serialised (not ordered). `now_ms` arguments are the host's monotonic
//! clock in milliseconds (`tidemark_monotonic_ms` when a batch buffer reports to the tracker).

use std::sync::Arc;

use tidemark_core::{Tracker, TrackerOptions, WriterId, WriterStatus};

use crate::cast::{self, Kind};
use crate::tidemark_status;
use crate::types::*;

mod flush;
mod query;
mod stale;

pub use flush::*;
pub use query::*;
pub use stale::*;

/// A flush tracker: opaque; create with `tidemark_tracker_new`, release with
/// `tidemark_tracker_free`.
pub struct tidemark_tracker {
    _opaque: [u8; 0],
}

impl Kind for Arc<Tracker> {
    type Opaque = tidemark_tracker;
    fn magic() -> u64 {
        0x7469_6465_7472_6b31 // "tidetrk1"
    }
}

/// Borrows the tracker behind a handle (NULL → `NULL_ARGUMENT`, foreign → `INVALID_HANDLE`).
///
/// # Safety
/// `t` must be NULL or a handle from `tidemark_tracker_new` that is not being freed.
pub(crate) unsafe fn tracker<'a>(
    t: *const tidemark_tracker,
) -> Result<&'a Arc<Tracker>, tidemark_status> {
    // SAFETY: forwarded contract.
    unsafe { cast::borrow::<Arc<Tracker>>(t) }
}

/// Fills `*out` with the default options: no initial ack, no writer slots allocated up front
/// (they grow in doubling segments), at most `UINT32_MAX` writers, a 60 000 ms grace period,
/// 65 536 queued events.
///
/// # Safety
/// - `out` is NULL or points to writable memory for one `tidemark_tracker_options`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidemark_tracker_options_default(
    out: *mut tidemark_tracker_options,
) -> tidemark_status {
    boundary!({
        // SAFETY: C contract: NULL or a writable options struct.
        let out = unsafe { cast::out(out)? };
        let d = TrackerOptions::default();
        out.write(tidemark_tracker_options {
            initial_ack: d.initial_ack.unwrap_or(0),
            has_initial_ack: d.initial_ack.is_some().into(),
            expected_writers: d.expected_writers,
            max_writers: d.max_writers,
            stall_grace_ms: d.stall_grace_ms,
            event_capacity: d.event_capacity,
        });
        Ok(())
    })
}

/// Creates a tracker. On `OK`, `*out` receives a new handle the caller owns: release it with
/// `tidemark_tracker_free`. `INVALID_ARGUMENT` when `max_writers` is 0 or above `UINT32_MAX`,
/// `expected_writers > max_writers`, or `initial_ack` is `UINT64_MAX`.
///
/// # Safety
/// - `options` is NULL or points to a valid `tidemark_tracker_options`.
/// - `out` is NULL or points to writable memory for one pointer (it receives a new tracker handle).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidemark_tracker_new(
    options: *const tidemark_tracker_options,
    out: *mut *mut tidemark_tracker,
) -> tidemark_status {
    boundary!({
        // SAFETY: C contract: NULL or a valid options struct; NULL or a writable pointer.
        let (options, out) = unsafe { (cast::input(options)?, cast::out(out)?) };
        let o = TrackerOptions {
            initial_ack: options
                .has_initial_ack
                .get()?
                .then_some(options.initial_ack),
            expected_writers: options.expected_writers,
            max_writers: options.max_writers,
            stall_grace_ms: options.stall_grace_ms,
            event_capacity: options.event_capacity,
        };
        let tracker = Tracker::new(o).map_err(tidemark_status::from)?;
        out.write(cast::into_raw(Arc::new(tracker)));
        Ok(())
    })
}

/// Releases a tracker handle. NULL is a no-op. It must be the last call on this handle (calls
/// racing with it are undefined behaviour); frees of distinct handles may run concurrently. A
/// batch buffer linked to the tracker keeps the tracker itself alive until the buffer is freed.
///
/// # Safety
/// - `tracker` is NULL or a live tracker handle that no other call uses during or after this one.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidemark_tracker_free(tracker: *mut tidemark_tracker) {
    boundary_void!({
        if !tracker.is_null() {
            // SAFETY: C contract: a live handle, and no other call uses it now or later.
            drop(unsafe { cast::take::<Arc<Tracker>>(tracker) });
        }
    })
}

/// Registers a new writer; on `OK`, `*out` receives its id. `CAPACITY` past `max_writers`.
/// Cost: usually a few hundred nanoseconds, but when every allocated slot is taken the writer
/// table adds a segment twice as large as the last one (1 024, 2 048, 4 096, … slots), zeroed
/// by the allocator (large ones come as fresh pages, touched on first use), so the call enters
/// the allocator and possibly the kernel. Set `expected_writers` to allocate up front, or
/// register from a thread that may block briefly (a BEAM dirty scheduler);
/// `tidemark_tracker_register_if_allocated` registers only when no allocation is needed.
///
/// # Safety
/// - `tracker` is NULL or a live tracker handle (not freed, and not freed during the call).
/// - `out` is NULL or points to writable memory for one `tidemark_writer_id`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidemark_tracker_register(
    tracker: *const tidemark_tracker,
    out: *mut tidemark_writer_id,
) -> tidemark_status {
    boundary!({
        // SAFETY: C contract on both pointers.
        let (t, out) = unsafe { (self::tracker(tracker)?, cast::out(out)?) };
        let w = t.register().map_err(tidemark_status::from)?;
        out.write(w.to_raw());
        Ok(())
    })
}

/// Registers a new writer only if that needs no allocation: on `OK`, `*out` receives its id,
/// exactly as from `tidemark_tracker_register`. `WOULD_BLOCK` when the writer table would have
/// to grow first: nothing changed and `*out` was not written; register with
/// `tidemark_tracker_register` from a thread that may block briefly (a BEAM dirty scheduler)
/// instead. `CAPACITY` past `max_writers`. O(1) and allocation-free whatever the outcome, so
/// it is safe on a thread that must not stall: a host tries it first and falls back to
/// `tidemark_tracker_register` elsewhere only on `WOULD_BLOCK`. Slots allocated up front
/// (`expected_writers`) and slots freed by `tidemark_tracker_unregister` need no allocation;
/// beyond them, when the table grows and by how much is the library's own business.
///
/// # Safety
/// - `tracker` is NULL or a live tracker handle (not freed, and not freed during the call).
/// - `out` is NULL or points to writable memory for one `tidemark_writer_id`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidemark_tracker_register_if_allocated(
    tracker: *const tidemark_tracker,
    out: *mut tidemark_writer_id,
) -> tidemark_status {
    boundary!({
        // SAFETY: C contract on both pointers.
        let (t, out) = unsafe { (self::tracker(tracker)?, cast::out(out)?) };
        let w = t
            .register_if_allocated()
            .map_err(tidemark_status::from)?
            .ok_or(tidemark_status::WouldBlock)?;
        out.write(w.to_raw());
        Ok(())
    })
}

/// Releases a writer's slot (pending or evicted writers included: whatever it owed stops
/// pinning the ack). Its id becomes stale: later calls with it give `UNKNOWN_WRITER`.
///
/// # Safety
/// - `tracker` is NULL or a live tracker handle (not freed, and not freed during the call).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidemark_tracker_unregister(
    tracker: *const tidemark_tracker,
    writer: tidemark_writer_id,
) -> tidemark_status {
    boundary!({
        // SAFETY: C contract.
        let t = unsafe { self::tracker(tracker)? };
        Ok(t.unregister(WriterId::from_raw(writer))?)
    })
}

/// On `OK`, `*out` receives the writer's state (and eviction reason).
///
/// # Safety
/// - `tracker` is NULL or a live tracker handle (not freed, and not freed during the call).
/// - `out` is NULL or points to writable memory for one `tidemark_writer_status`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidemark_tracker_writer_status(
    tracker: *const tidemark_tracker,
    writer: tidemark_writer_id,
    out: *mut tidemark_writer_status,
) -> tidemark_status {
    boundary!({
        // SAFETY: C contract on both pointers.
        let (t, out) = unsafe { (self::tracker(tracker)?, cast::out(out)?) };
        let s = t
            .writer_status(WriterId::from_raw(writer))
            .map_err(tidemark_status::from)?;
        out.write(match s {
            WriterStatus::Idle => tidemark_writer_status {
                state: tidemark_writer_state::Idle,
                reason: tidemark_evict_reason::None,
            },
            WriterStatus::Pending => tidemark_writer_status {
                state: tidemark_writer_state::Pending,
                reason: tidemark_evict_reason::None,
            },
            WriterStatus::Evicted(r) => tidemark_writer_status {
                state: tidemark_writer_state::Evicted,
                reason: r.into(),
            },
        });
        Ok(())
    })
}
