//! The C ABI of tidemark: the tracker, its staleness sweeps and batch buffers behind opaque
//! handles. `include/tidemark.h` is generated from this crate by cbindgen; the doc comments here
//! are the C documentation. Conventions (docs/ABI.md):
//!
//! - Opaque handles come from `_new` calls and go back through the matching `_free`.
//! - Every fallible call returns a [`tidemark_status`]; out-parameters are written only on the
//!   outcomes their documentation names (normally `TIDEMARK_STATUS_OK`), never on errors.
//! - Every pointer is checked: NULL gives `TIDEMARK_STATUS_NULL_ARGUMENT` (an array pointer may
//!   be NULL when its length is 0). A panic inside never crosses the boundary: it becomes
//!   `TIDEMARK_STATUS_PANIC`.
//! - No thread-local "last error": [`tidemark_status_message`] gives a static description.
//!
//! Layout: `boundary` (the macros every export's body is one call of), `cast` (the only module that
//! turns raw pointers into references or boxes), `types` (the `#[repr(C)]` types), `tracker`
//! and `batch` (the exports).
#![allow(non_camel_case_types)]

#[macro_use]
mod boundary;
mod batch;
mod cast;
mod tracker;
mod types;

pub use batch::*;
pub use tracker::*;
pub use types::*;

use std::ffi::{CStr, c_char};

/// Major version of the library this header belongs to (checked against Cargo.toml by a test).
pub const TIDEMARK_VERSION_MAJOR: u32 = 0;
/// Minor version (new functions or constants; existing ones keep their meaning).
pub const TIDEMARK_VERSION_MINOR: u32 = 1;
/// Patch version (fixes only).
pub const TIDEMARK_VERSION_PATCH: u32 = 0;

/// The outcome of a call. The numbers are a stable contract: new outcomes get new numbers,
/// existing ones never change.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum tidemark_status {
    /// Success.
    Ok = 0,
    /// A required pointer argument was NULL. Nothing changed.
    NullArgument = 1,
    /// An argument is out of range or inconsistent (each call's documentation says when).
    /// Nothing changed.
    InvalidArgument = 2,
    /// A commit's `tx` is not above the previous commit's. Nothing changed. (A flush report
    /// below an earlier one is not an error: it is accepted and changes nothing.)
    OffsetRegressed = 3,
    /// The writer id was never issued by this tracker, or was unregistered (a stale id).
    UnknownWriter = 4,
    /// The writer was evicted (crash, orphan or stall): its reports are refused until the host
    /// unregisters it and registers a new one.
    EvictedWriter = 5,
    /// The tracker already holds `max_writers` writers.
    Capacity = 6,
    /// The batch buffer is at its message or byte capacity: retry later. The message was not
    /// taken (the caller still owns it).
    Full = 7,
    /// The batch buffer is stopping: admission is closed. The message was not taken.
    Stopping = 8,
    /// The batch buffer is closed (stopped): nothing more is accepted or emitted.
    Closed = 9,
    /// A blocking call's timeout passed first.
    Timeout = 10,
    /// Nothing to return yet (non-blocking calls): poll again later. From
    /// `tidemark_tracker_register_if_allocated`: registering would have to allocate; nothing
    /// changed.
    WouldBlock = 11,
    /// The caller's array or buffer is too small for the result; nothing was written.
    BufferTooSmall = 12,
    /// A panic was caught at the boundary (a bug in tidemark; please report it). The handle may
    /// be in an unspecified but memory-safe state.
    Panic = 13,
    /// The message alone exceeds the buffer's `capacity_bytes`: it can never be accepted.
    TooLarge = 14,
    /// The batch is not in flight in this buffer (another buffer's batch, or it was already
    /// handed back by a stop whose deadline passed). The batch handle was still consumed.
    NotInFlight = 15,
    /// The batch was acked (delivered), but reporting its offset to the linked tracker failed
    /// (for example, the linked writer was evicted).
    LinkFailed = 16,
    /// No value exists yet (no ack before the first commit, nothing pinning the ack).
    Empty = 17,
    /// The handle is not a live handle of the expected type (a live handle of another type, or
    /// a misaligned pointer). A freed handle is not detected: see docs/ABI.md.
    InvalidHandle = 18,
    /// Memory for the tracker's tables could not be allocated (the host is out of memory, or a
    /// table reached its addressable limit). Nothing changed.
    OutOfMemory = 19,
}

impl tidemark_status {
    /// The static description of this status.
    pub fn message(self) -> &'static CStr {
        match self {
            tidemark_status::Ok => c"ok",
            tidemark_status::NullArgument => c"a required pointer argument was NULL",
            tidemark_status::InvalidArgument => c"an argument is out of range or inconsistent",
            tidemark_status::OffsetRegressed => c"offset regressed",
            tidemark_status::UnknownWriter => c"unknown or stale writer id",
            tidemark_status::EvictedWriter => c"writer was evicted",
            tidemark_status::Capacity => c"tracker is at max_writers",
            tidemark_status::Full => c"batch buffer is full",
            tidemark_status::Stopping => c"batch buffer is stopping",
            tidemark_status::Closed => c"batch buffer is closed",
            tidemark_status::Timeout => c"timed out",
            tidemark_status::WouldBlock => c"nothing yet; poll again",
            tidemark_status::BufferTooSmall => c"caller buffer too small",
            tidemark_status::Panic => c"internal panic caught at the C boundary",
            tidemark_status::TooLarge => c"message exceeds the buffer's byte capacity",
            tidemark_status::NotInFlight => c"batch is not in flight in this buffer",
            tidemark_status::LinkFailed => c"batch acked, but reporting to the tracker failed",
            tidemark_status::Empty => c"no value yet",
            tidemark_status::InvalidHandle => c"not a live handle of the expected type",
            tidemark_status::OutOfMemory => c"out of memory",
        }
    }

    /// The status with this number, if any.
    pub fn from_u32(n: u32) -> Option<tidemark_status> {
        use tidemark_status::*;
        Some(match n {
            0 => Ok,
            1 => NullArgument,
            2 => InvalidArgument,
            3 => OffsetRegressed,
            4 => UnknownWriter,
            5 => EvictedWriter,
            6 => Capacity,
            7 => Full,
            8 => Stopping,
            9 => Closed,
            10 => Timeout,
            11 => WouldBlock,
            12 => BufferTooSmall,
            13 => Panic,
            14 => TooLarge,
            15 => NotInFlight,
            16 => LinkFailed,
            17 => Empty,
            18 => InvalidHandle,
            19 => OutOfMemory,
            _ => return None,
        })
    }
}

/// The library version as a static NUL-terminated string, e.g. `"0.1.0"`. Never NULL; never
/// free it. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn tidemark_version() -> *const c_char {
    boundary_value!(c"unknown".as_ptr(), {
        const VERSION: &CStr =
            match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
                Ok(v) => v,
                Err(_) => panic!("the version contains no NUL"),
            };
        VERSION.as_ptr()
    })
}

/// A static NUL-terminated description of `status` (a `tidemark_status` value); an unknown
/// number gives `"unknown status"`. Never NULL; never free it. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn tidemark_status_message(status: u32) -> *const c_char {
    boundary_value!(c"unknown status".as_ptr(), {
        let text = tidemark_status::from_u32(status).map_or(c"unknown status", |s| s.message());
        text.as_ptr()
    })
}

/// Milliseconds on the monotonic clock the batch buffers use (a process-wide origin). Pass it as
/// `now_ms` to the tracker calls when a batch buffer reports to that tracker through its link,
/// so both sides read one clock. Thread-safe. (0 only if reading the clock panicked.)
#[unsafe(no_mangle)]
pub extern "C" fn tidemark_monotonic_ms() -> u64 {
    boundary_value!(0, {
        use tidemark_core::batch::{Clock, SystemClock};
        SystemClock.now().as_millis() as u64
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_constants_match_cargo_toml() {
        let parse = |s: &str| s.parse::<u32>().expect("numeric version part");
        assert_eq!(
            TIDEMARK_VERSION_MAJOR,
            parse(env!("CARGO_PKG_VERSION_MAJOR"))
        );
        assert_eq!(
            TIDEMARK_VERSION_MINOR,
            parse(env!("CARGO_PKG_VERSION_MINOR"))
        );
        assert_eq!(
            TIDEMARK_VERSION_PATCH,
            parse(env!("CARGO_PKG_VERSION_PATCH"))
        );
        // SAFETY: tidemark_version returns a static NUL-terminated string.
        let v = unsafe { CStr::from_ptr(tidemark_version()) };
        assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn status_numbers_are_the_contract() {
        let mut n = 0;
        while let Some(s) = tidemark_status::from_u32(n) {
            assert_eq!(s as u32, n, "{s:?}");
            let i = n;
            n += 1;
            // SAFETY: static NUL-terminated strings.
            let m = unsafe { CStr::from_ptr(tidemark_status_message(i)) };
            assert!(!m.to_bytes().is_empty());
        }
        assert_eq!(n, 20, "a new status needs a number, a message and a test");
        // The numbers other repositories depend on.
        assert_eq!(tidemark_status::Ok as u32, 0);
        assert_eq!(tidemark_status::NullArgument as u32, 1);
        assert_eq!(tidemark_status::Panic as u32, 13);
        assert_eq!(tidemark_status::InvalidHandle as u32, 18);
        assert_eq!(tidemark_status::OutOfMemory as u32, 19);
        // SAFETY: as above.
        let m = unsafe { CStr::from_ptr(tidemark_status_message(999)) };
        assert_eq!(m.to_str().unwrap(), "unknown status");
    }
}
