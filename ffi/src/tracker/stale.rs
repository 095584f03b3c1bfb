//! Liveness and staleness: grace period, downs, touch, pause / resume, sweeps and their events.

use tidemark_core::{DownClass, Event, WriterId};

use super::{tidemark_tracker, tracker};
use crate::cast;
use crate::tidemark_status;
use crate::types::*;

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
