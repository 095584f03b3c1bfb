//! Reading the ack and the counters; the call budget and the backlog it leaves.

use std::time::Duration;

use super::{tidemark_tracker, tracker};
use crate::cast;
use crate::tidemark_status;
use crate::types::*;

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
