//! Tracker exports: `tidemark_tracker_*`.
//!
//! Threading: every call on a live tracker may run concurrently with any other call on it,
//! except `tidemark_tracker_free`, which must be the last call on that handle. Commits from
//! several threads are serialised (not ordered). `now_ms` arguments are the host's monotonic
//! clock in milliseconds (`tidemark_monotonic_ms` when a batch buffer reports to the tracker).

use std::sync::Arc;
use std::time::Duration;

use tidemark_core::{DownClass, Event, Tracker, TrackerOptions, WriterId, WriterStatus};

use crate::cast::{self, Kind};
use crate::tidemark_status;
use crate::types::*;

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

/// On `OK`, `*out` receives the ack: the highest `tx` such that every commit at or below it
/// was flushed by all its writers (or its writers were evicted or removed). `EMPTY` before the
/// first commit when no `initial_ack` was set. One atomic load: cheap to poll.
///
/// # Safety
/// - `tracker` is NULL or a live tracker handle (not freed, and not freed during the call).
/// - `out` is NULL or points to writable memory for one `u64`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidemark_tracker_ack(
    tracker: *const tidemark_tracker,
    out: *mut u64,
) -> tidemark_status {
    boundary!({
        // SAFETY: C contract on both pointers.
        let (t, out) = unsafe { (self::tracker(tracker)?, cast::out(out)?) };
        out.write(t.ack().ok_or(tidemark_status::Empty)?);
        Ok(())
    })
}

/// On `OK`, `*out` receives how many times the ack moved: compare two readings to learn that it
/// advanced without reading the value.
///
/// # Safety
/// - `tracker` is NULL or a live tracker handle (not freed, and not freed during the call).
/// - `out` is NULL or points to writable memory for one `u64`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidemark_tracker_ack_generation(
    tracker: *const tidemark_tracker,
    out: *mut u64,
) -> tidemark_status {
    boundary!({
        // SAFETY: C contract on both pointers.
        let (t, out) = unsafe { (self::tracker(tracker)?, cast::out(out)?) };
        out.write(t.ack_generation());
        Ok(())
    })
}

/// Blocks until the ack exceeds `after` (or any ack exists, when `has_after` is false), at most
/// `timeout_ms`; on `OK`, `*out` receives the ack; `TIMEOUT` otherwise. Blocking: not for BEAM
/// schedulers (poll `tidemark_tracker_ack` there).
///
/// # Safety
/// - `tracker` is NULL or a live tracker handle (not freed, and not freed during the call).
/// - `out` is NULL or points to writable memory for one `u64`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidemark_tracker_wait_ack(
    tracker: *const tidemark_tracker,
    after: u64,
    has_after: bool,
    timeout_ms: u64,
    out: *mut u64,
) -> tidemark_status {
    boundary!({
        // SAFETY: C contract on both pointers.
        let (t, out) = unsafe { (self::tracker(tracker)?, cast::out(out)?) };
        let ack = t
            .wait_ack(
                has_after.then_some(after),
                Duration::from_millis(timeout_ms),
            )
            .ok_or(tidemark_status::Timeout)?;
        out.write(ack);
        Ok(())
    })
}

/// On `OK`, `*out` receives the last commit's offset; `EMPTY` before the first commit.
///
/// # Safety
/// - `tracker` is NULL or a live tracker handle (not freed, and not freed during the call).
/// - `out` is NULL or points to writable memory for one `tidemark_offset`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidemark_tracker_last_seen(
    tracker: *const tidemark_tracker,
    out: *mut tidemark_offset,
) -> tidemark_status {
    boundary!({
        // SAFETY: C contract on both pointers.
        let (t, out) = unsafe { (self::tracker(tracker)?, cast::out(out)?) };
        out.write(t.last_seen().ok_or(tidemark_status::Empty)?.into());
        Ok(())
    })
}

/// On `OK`, `*out` describes the writer whose oldest unflushed delivery holds the ack back;
/// `EMPTY` when nothing is pending.
///
/// # Safety
/// - `tracker` is NULL or a live tracker handle (not freed, and not freed during the call).
/// - `out` is NULL or points to writable memory for one `tidemark_pinning`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidemark_tracker_pinning(
    tracker: *const tidemark_tracker,
    now_ms: u64,
    out: *mut tidemark_pinning,
) -> tidemark_status {
    boundary!({
        // SAFETY: C contract on both pointers.
        let (t, out) = unsafe { (self::tracker(tracker)?, cast::out(out)?) };
        let p = t.pinning(now_ms).ok_or(tidemark_status::Empty)?;
        out.write(pinning(&p));
        Ok(())
    })
}

fn pinning(p: &tidemark_core::Pinning) -> tidemark_pinning {
    tidemark_pinning {
        writer: p.writer.to_raw(),
        owes: p.owes.into(),
        flushed: p.flushed.unwrap_or_default().into(),
        has_flushed: p.flushed.is_some(),
        ms_since_progress: p.ms_since_progress,
        paused: p.paused,
        challenged: p.challenged,
        orphaned: p.orphaned,
    }
}

/// On `OK`, `*out` receives the tracker's counters and gauges (a snapshot; takes the log lock
/// briefly: meant for metrics, not for every flush).
///
/// # Safety
/// - `tracker` is NULL or a live tracker handle (not freed, and not freed during the call).
/// - `out` is NULL or points to writable memory for one `tidemark_tracker_counters`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidemark_tracker_stats(
    tracker: *const tidemark_tracker,
    now_ms: u64,
    out: *mut tidemark_tracker_counters,
) -> tidemark_status {
    boundary!({
        // SAFETY: C contract on both pointers.
        let (t, out) = unsafe { (self::tracker(tracker)?, cast::out(out)?) };
        let s = t.stats(now_ms);
        out.write(tidemark_tracker_counters {
            ack: s.ack.unwrap_or(0),
            has_ack: s.ack.is_some(),
            last_seen: s.last_seen.unwrap_or_default().into(),
            has_last_seen: s.last_seen.is_some(),
            ack_lag: s.ack_lag.unwrap_or(0),
            ack_advances: s.ack_advances,
            registered: s.registered,
            pending: s.pending,
            commits: s.commits,
            flushes: s.flushes,
            late_flushes: s.late_flushes,
            removes: s.removes,
            challenges: s.challenges,
            evicted_crashed: s.evicted_crashed,
            evicted_orphaned: s.evicted_orphaned,
            evicted_stalled: s.evicted_stalled,
            events_dropped: s.events_dropped,
            memory_bytes: t.memory_bytes() as u64,
        });
        Ok(())
    })
}

/// On `OK`, `*out` receives what calls did to the delivery log (work per call, backlog).
///
/// # Safety
/// - `tracker` is NULL or a live tracker handle (not freed, and not freed during the call).
/// - `out` is NULL or points to writable memory for one `tidemark_work_stats`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidemark_tracker_work_stats(
    tracker: *const tidemark_tracker,
    out: *mut tidemark_work_stats,
) -> tidemark_status {
    boundary!({
        // SAFETY: C contract on both pointers.
        let (t, out) = unsafe { (self::tracker(tracker)?, cast::out(out)?) };
        let w = t.work_stats();
        out.write(tidemark_work_stats {
            budget: w.budget,
            deliveries_popped: w.deliveries_popped,
            entries_scanned: w.entries_scanned,
            max_call_work: w.max_call_work,
            backlogs: w.backlogs,
            backlog: w.backlog,
            log_len: w.log_len,
        });
        Ok(())
    })
}

/// Sets the most deliveries one call may examine (pop, judge or compact); default 1 024. A
/// host with a tighter time limit per call (a BEAM scheduler) sets a smaller one; larger
/// backlogs take more calls. `INVALID_ARGUMENT` for 0.
///
/// # Safety
/// - `tracker` is NULL or a live tracker handle (not freed, and not freed during the call).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidemark_tracker_set_call_budget(
    tracker: *const tidemark_tracker,
    deliveries: u64,
) -> tidemark_status {
    boundary!({
        // SAFETY: C contract on the pointer.
        let t = unsafe { self::tracker(tracker)? };
        if deliveries == 0 {
            return Err(tidemark_status::InvalidArgument);
        }
        t.set_call_budget(usize::try_from(deliveries).unwrap_or(usize::MAX));
        Ok(())
    })
}

/// Runs one budgeted step of leftover work (a drain backlog or a compaction pass); on `OK`,
/// `*more` receives true while more remains (call again, from a background thread or a dirty
/// scheduler). A tracker without a backlog returns at once with false.
///
/// # Safety
/// - `tracker` is NULL or a live tracker handle (not freed, and not freed during the call).
/// - `more` is NULL or points to writable memory for one `bool`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidemark_tracker_run_backlog(
    tracker: *const tidemark_tracker,
    more: *mut bool,
) -> tidemark_status {
    boundary!({
        // SAFETY: C contract on both pointers.
        let (t, more) = unsafe { (self::tracker(tracker)?, cast::out(more)?) };
        more.write(t.run_backlog());
        Ok(())
    })
}

/// On `OK`, `*out` receives whether leftover work (a drain backlog or a compaction pass) waits
/// for `tidemark_tracker_run_backlog` or later calls.
///
/// # Safety
/// - `tracker` is NULL or a live tracker handle (not freed, and not freed during the call).
/// - `out` is NULL or points to writable memory for one `bool`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidemark_tracker_has_backlog(
    tracker: *const tidemark_tracker,
    out: *mut bool,
) -> tidemark_status {
    boundary!({
        // SAFETY: C contract on both pointers.
        let (t, out) = unsafe { (self::tracker(tracker)?, cast::out(out)?) };
        out.write(t.has_backlog());
        Ok(())
    })
}

/// Changes the grace period (milliseconds) for later sweeps.
///
/// # Safety
/// - `tracker` is NULL or a live tracker handle (not freed, and not freed during the call).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidemark_tracker_set_stall_grace_ms(
    tracker: *const tidemark_tracker,
    grace_ms: u64,
) -> tidemark_status {
    boundary!({
        // SAFETY: C contract.
        let t = unsafe { self::tracker(tracker)? };
        t.set_stall_grace_ms(grace_ms);
        Ok(())
    })
}

/// The host learned that a writer is gone; `class` is a `tidemark_down_class` value
/// (`INVALID_ARGUMENT` otherwise). See the classes for what each does.
///
/// # Safety
/// - `tracker` is NULL or a live tracker handle (not freed, and not freed during the call).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidemark_tracker_down(
    tracker: *const tidemark_tracker,
    writer: tidemark_writer_id,
    class: u32,
    now_ms: u64,
) -> tidemark_status {
    boundary!({
        // SAFETY: C contract.
        let t = unsafe { self::tracker(tracker)? };
        let class = match class {
            c if c == tidemark_down_class::Crash as u32 => DownClass::Crash,
            c if c == tidemark_down_class::Cleanup as u32 => DownClass::Cleanup,
            c if c == tidemark_down_class::Teardown as u32 => DownClass::Teardown,
            _ => return Err(tidemark_status::InvalidArgument),
        };
        Ok(t.down(WriterId::from_raw(writer), class, now_ms)?)
    })
}

/// Answers a challenge: the writer is alive and deferring on purpose; its grace period restarts
/// at `now_ms`. No effect on a writer that owes nothing.
///
/// # Safety
/// - `tracker` is NULL or a live tracker handle (not freed, and not freed during the call).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidemark_tracker_touch(
    tracker: *const tidemark_tracker,
    writer: tidemark_writer_id,
    now_ms: u64,
) -> tidemark_status {
    boundary!({
        // SAFETY: C contract.
        let t = unsafe { self::tracker(tracker)? };
        Ok(t.touch(WriterId::from_raw(writer), now_ms)?)
    })
}

/// Pauses a writer (backpressure on purpose): sweeps neither challenge nor evict it until
/// `tidemark_tracker_resume`. It still pins the ack.
///
/// # Safety
/// - `tracker` is NULL or a live tracker handle (not freed, and not freed during the call).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidemark_tracker_pause(
    tracker: *const tidemark_tracker,
    writer: tidemark_writer_id,
) -> tidemark_status {
    boundary!({
        // SAFETY: C contract.
        let t = unsafe { self::tracker(tracker)? };
        Ok(t.pause(WriterId::from_raw(writer))?)
    })
}

/// Resumes a paused writer; its grace period restarts at `now_ms`.
///
/// # Safety
/// - `tracker` is NULL or a live tracker handle (not freed, and not freed during the call).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidemark_tracker_resume(
    tracker: *const tidemark_tracker,
    writer: tidemark_writer_id,
    now_ms: u64,
) -> tidemark_status {
    boundary!({
        // SAFETY: C contract.
        let t = unsafe { self::tracker(tracker)? };
        Ok(t.resume(WriterId::from_raw(writer), now_ms)?)
    })
}

/// Runs a staleness sweep at `now_ms`: challenges pending writers without progress for the
/// grace period, evicts those challenged earlier that still made none, and evicts orphans past
/// the grace period. On `OK`, `*out` receives the counts; the events are queued for
/// `tidemark_tracker_take_events`. Cost is proportional to the writers it acts on.
///
/// # Safety
/// - `tracker` is NULL or a live tracker handle (not freed, and not freed during the call).
/// - `out` is NULL or points to writable memory for one `tidemark_sweep_outcome`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidemark_tracker_sweep(
    tracker: *const tidemark_tracker,
    now_ms: u64,
    out: *mut tidemark_sweep_outcome,
) -> tidemark_status {
    boundary!({
        // SAFETY: C contract on both pointers.
        let (t, out) = unsafe { (self::tracker(tracker)?, cast::out(out)?) };
        let o = t.sweep(now_ms);
        out.write(tidemark_sweep_outcome {
            challenged: o.challenged,
            evicted: o.evicted,
        });
        Ok(())
    })
}

/// Moves up to `cap` queued events, oldest first, into `out`; on `OK`, `*out_n` receives how
/// many (0 when none). `out` may be NULL when `cap` is 0. Never blocks.
///
/// # Safety
/// - `tracker` is NULL or a live tracker handle (not freed, and not freed during the call).
/// - `out` is NULL or points to `cap` writable `tidemark_event`, untouched by others during the call (may be NULL when `cap` is 0).
/// - `out_n` is NULL or points to writable memory for one `usize`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidemark_tracker_take_events(
    tracker: *const tidemark_tracker,
    out: *mut tidemark_event,
    cap: usize,
    out_n: *mut usize,
) -> tidemark_status {
    boundary!({
        // SAFETY: C contract: a live handle, `cap` writable events, a writable count.
        let (t, mut dst, out_n) = unsafe {
            (
                self::tracker(tracker)?,
                cast::slice_out(out, cap)?,
                cast::out(out_n)?,
            )
        };
        let mut events = Vec::new(); // grows only when there are events
        let n = t.take_events(&mut events, dst.len());
        for (i, e) in events.iter().enumerate() {
            dst.set(i, event(e));
        }
        out_n.write(n);
        Ok(())
    })
}

fn event(e: &Event) -> tidemark_event {
    match *e {
        Event::Challenged(w) => tidemark_event {
            kind: tidemark_event_kind::Challenged,
            reason: tidemark_evict_reason::None,
            writer: w.to_raw(),
        },
        Event::Evicted(w, r) => tidemark_event {
            kind: tidemark_event_kind::Evicted,
            reason: r.into(),
            writer: w.to_raw(),
        },
        Event::Removed(w) => tidemark_event {
            kind: tidemark_event_kind::Removed,
            reason: tidemark_evict_reason::None,
            writer: w.to_raw(),
        },
    }
}
