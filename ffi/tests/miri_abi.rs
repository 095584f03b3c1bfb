//! The C ABI's input checks, called exactly as a C host calls them, small enough for miri
//! (`scripts/miri.sh`): NULL handles and out-parameters, misaligned and wrong-type handles,
//! memory that is not a handle, zero lengths with NULL arrays, array lengths too large to be
//! real, message lengths above the buffer's capacity (refused before a byte is read), flag
//! bytes other than 0 and 1, and huge timeouts. Every call must return its documented status
//! without undefined behaviour (miri checks every read). Freed handles are not used here: that
//! is undefined behaviour by the ABI's contract. Also runs under plain `cargo test`.
use std::mem::MaybeUninit;
use std::ptr;

use tidemark::*;

type S = tidemark_status;

fn new_tracker() -> *mut tidemark_tracker {
    let mut o = MaybeUninit::<tidemark_tracker_options>::uninit();
    let mut t = ptr::null_mut();
    // SAFETY: a writable options struct, then valid options and a writable pointer.
    unsafe {
        assert_eq!(tidemark_tracker_options_default(o.as_mut_ptr()), S::Ok);
        assert_eq!(tidemark_tracker_new(o.as_ptr(), &mut t), S::Ok);
    }
    t
}

fn new_buffer(capacity_bytes: u64) -> *mut tidemark_batch_buffer {
    let mut c = MaybeUninit::<tidemark_batch_config>::uninit();
    let mut b = ptr::null_mut();
    // SAFETY: a writable config, then a valid one and a writable pointer.
    unsafe {
        assert_eq!(tidemark_batch_config_default(c.as_mut_ptr()), S::Ok);
        let mut c = c.assume_init();
        c.max_messages = 2;
        c.max_bytes = capacity_bytes.min(64);
        c.capacity_messages = 4; // a 4-slot ring: fast under miri
        c.capacity_bytes = capacity_bytes;
        c.linger_us = 0;
        assert_eq!(tidemark_batch_buffer_new(&c, &mut b), S::Ok);
    }
    b
}

fn message(data: &[u8], len: usize, flag: u8) -> tidemark_message {
    tidemark_message {
        data: data.as_ptr(),
        len,
        offset: tidemark_offset { tx: 7, op: 0 },
        // SAFETY: `CBool` is a transparent `u8`: every byte is a valid value.
        has_offset: unsafe { std::mem::transmute::<u8, CBool>(flag) },
    }
}

#[test]
fn null_misaligned_and_foreign_handles_are_refused() {
    let t = new_tracker();
    let b = new_buffer(256);
    let zeros = [0u64; 4]; // aligned memory that is not a handle
    let mut ack = 0u64;
    // SAFETY: every pointer is NULL, or points to readable memory the library must check
    // (a live handle of another type, one byte into a live handle, zeros) before use.
    unsafe {
        assert_eq!(tidemark_tracker_ack(ptr::null(), &mut ack), S::NullArgument);
        assert_eq!(tidemark_tracker_ack(t, ptr::null_mut()), S::NullArgument);
        assert_eq!(tidemark_tracker_ack(b.cast(), &mut ack), S::InvalidHandle);
        assert_eq!(
            tidemark_tracker_ack(zeros.as_ptr().cast(), &mut ack),
            S::InvalidHandle
        );
        let misaligned = t.cast::<u8>().wrapping_add(1).cast::<tidemark_tracker>();
        assert_eq!(tidemark_tracker_ack(misaligned, &mut ack), S::InvalidHandle);
        let mut out = [0u64; 2];
        let out_misaligned = out.as_mut_ptr().cast::<u8>().wrapping_add(1).cast::<u64>();
        assert_eq!(
            tidemark_tracker_ack_generation(t, out_misaligned),
            S::InvalidArgument
        );
        assert_eq!(tidemark_batch_buffer_flush(t.cast(), 0), S::InvalidHandle);
        assert_eq!(
            tidemark_batch_info(b.cast(), MaybeUninit::uninit().as_mut_ptr()),
            S::InvalidHandle
        );
        let mut sr = ptr::null_mut();
        assert_eq!(
            tidemark_batch_buffer_poll_stop(zeros.as_ptr().cast(), &mut sr),
            S::InvalidHandle
        );
        // A link to something that is not a tracker.
        let mut c = MaybeUninit::<tidemark_batch_config>::uninit();
        assert_eq!(tidemark_batch_config_default(c.as_mut_ptr()), S::Ok);
        let mut c = c.assume_init();
        c.link_tracker = b.cast();
        let mut b2 = ptr::null_mut();
        assert_eq!(tidemark_batch_buffer_new(&c, &mut b2), S::InvalidHandle);
        // `_free(NULL)` is a no-op.
        tidemark_tracker_free(ptr::null_mut());
        tidemark_batch_buffer_free(ptr::null_mut());
        tidemark_batch_free(ptr::null_mut());
        tidemark_stop_report_free(ptr::null_mut());
        let mut report = ptr::null_mut();
        assert_eq!(tidemark_batch_buffer_stop(b, 0, &mut report), S::Ok);
        tidemark_stop_report_free(report);
        tidemark_batch_buffer_free(b);
        tidemark_tracker_free(t);
    }
}

#[test]
fn zero_and_huge_array_lengths() {
    let t = new_tracker();
    let mut w = 0u64;
    let mut failed = usize::MAX;
    let dangling = ptr::NonNull::<u64>::dangling().as_ptr();
    // SAFETY: a live tracker; arrays are NULL with n == 0, or aligned pointers with a length
    // whose byte size exceeds isize::MAX (refused before any element is read).
    unsafe {
        assert_eq!(tidemark_tracker_register(t, &mut w), S::Ok);
        let o = tidemark_offset { tx: 1, op: 0 };
        assert_eq!(tidemark_tracker_commit(t, o, ptr::null(), 0, 0), S::Ok);
        assert_eq!(
            tidemark_tracker_commit(t, tidemark_offset { tx: 2, op: 0 }, ptr::null(), 1, 0),
            S::NullArgument
        );
        assert_eq!(
            tidemark_tracker_commit(
                t,
                tidemark_offset { tx: 2, op: 0 },
                dangling,
                usize::MAX / 4,
                0
            ),
            S::InvalidArgument
        );
        assert_eq!(
            tidemark_tracker_flushed_many(
                t,
                ptr::null(),
                ptr::null(),
                0,
                0,
                ptr::null_mut(),
                &mut failed
            ),
            S::Ok
        );
        assert_eq!(failed, 0);
        let mut n = usize::MAX;
        assert_eq!(
            tidemark_tracker_take_events(t, ptr::null_mut(), 0, &mut n),
            S::Ok
        );
        assert_eq!(n, 0);
        assert_eq!(
            tidemark_tracker_take_events(t, ptr::null_mut(), 1, &mut n),
            S::NullArgument
        );
        assert_eq!(tidemark_tracker_set_call_budget(t, 0), S::InvalidArgument);
        assert_eq!(tidemark_tracker_set_call_budget(t, u64::MAX), S::Ok);
        assert_eq!(tidemark_tracker_down(t, w, 3, 0), S::InvalidArgument);
        assert_eq!(
            tidemark_tracker_commit(
                t,
                tidemark_offset {
                    tx: u64::MAX,
                    op: 0
                },
                &w,
                1,
                0
            ),
            S::InvalidArgument
        );
        // A huge timeout when the ack is already there returns at once, without overflow.
        let mut ack = 0u64;
        // `.into()`: the flag parameter's type may change from `bool` to a checked byte.
        #[allow(clippy::useless_conversion)]
        let has_after = false.into();
        assert_eq!(
            tidemark_tracker_wait_ack(t, 0, has_after, u64::MAX, &mut ack),
            S::Ok
        );
        assert_eq!(ack, 1);
        tidemark_tracker_free(t);
    }
}

#[test]
fn message_lengths_and_flags_are_checked_before_bytes_are_read() {
    let b = new_buffer(64);
    let bytes = [5u8; 8];
    let mut accepted = usize::MAX;
    let mut refusal = S::Panic;
    // SAFETY: a live buffer; each message's `data` is readable for its `len` bytes, except
    // the lying lengths above `capacity_bytes`, which must be refused before any byte is read.
    unsafe {
        assert_eq!(
            tidemark_batch_buffer_try_push(b, &message(&bytes, 8, 1)),
            S::Ok
        );
        let empty = tidemark_message {
            data: ptr::null(),
            ..message(&bytes, 0, 0)
        };
        assert_eq!(tidemark_batch_buffer_try_push(b, &empty), S::Ok);
        let null_data = tidemark_message {
            data: ptr::null(),
            ..message(&bytes, 4, 0)
        };
        assert_eq!(
            tidemark_batch_buffer_try_push(b, &null_data),
            S::NullArgument
        );
        assert_eq!(
            tidemark_batch_buffer_try_push(b, &message(&bytes, 1 << 40, 1)),
            S::TooLarge
        );
        assert_eq!(
            tidemark_batch_buffer_try_push(b, &message(&bytes, usize::MAX, 0)),
            S::TooLarge
        );
        assert_eq!(
            tidemark_batch_buffer_try_push(b, &message(&bytes, 8, 2)),
            S::InvalidArgument
        );
        assert_eq!(
            tidemark_batch_buffer_push_timeout(b, &message(&bytes, 65, 0), u64::MAX),
            S::TooLarge
        );
        let list = [
            message(&bytes, 8, 1),
            message(&bytes, 1 << 40, 1),
            message(&bytes, 8, 1),
        ];
        assert_eq!(
            tidemark_batch_buffer_push_many(b, list.as_ptr(), 3, &mut accepted, &mut refusal),
            S::Ok
        );
        assert_eq!((accepted, refusal), (1, S::TooLarge));
        assert_eq!(
            tidemark_batch_buffer_push_many(b, ptr::null(), 0, &mut accepted, &mut refusal),
            S::Ok
        );
        assert_eq!((accepted, refusal), (0, S::Ok));
        let mut batch = ptr::null_mut();
        let mut wait = 0u64;
        assert_eq!(
            tidemark_batch_buffer_poll_batch(b, &mut batch, &mut wait),
            S::Ok
        );
        let mut n = usize::MAX;
        assert_eq!(
            tidemark_batch_messages(batch, ptr::null_mut(), 0, &mut n),
            S::BufferTooSmall
        );
        let mut written = usize::MAX;
        assert_eq!(
            tidemark_batch_copy_payloads(batch, ptr::null_mut(), 0, &mut written),
            S::BufferTooSmall
        );
        let mut dst = [0u8; 16];
        assert_eq!(
            tidemark_batch_copy_payloads(batch, dst.as_mut_ptr(), 16, &mut written),
            S::Ok
        );
        assert_eq!(written, 8);
        assert_eq!(tidemark_batch_buffer_ack(b, batch), S::Ok);
        let mut report = ptr::null_mut();
        // No sink runs here: a deadline of now hands the rest back.
        assert_eq!(tidemark_batch_buffer_stop(b, 0, &mut report), S::Ok);
        let mut c = tidemark_stop_counts::default();
        assert_eq!(tidemark_stop_report_counts(report, &mut c), S::Ok);
        assert_eq!(c.accepted, c.delivered + c.failed + c.handed_back);
        assert_eq!((c.accepted, c.delivered, c.handed_back), (3, 2, 1));
        tidemark_stop_report_free(report);
        tidemark_batch_buffer_free(b);
    }
}
