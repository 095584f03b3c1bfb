//! The one boundary every export goes through.
//!
//! [`boundary!`] runs the body inside `catch_unwind`: a panic becomes
//! `TIDEMARK_STATUS_PANIC` instead of unwinding into C (which would abort). The body returns
//! `Result<(), tidemark_status>`, so `?` on the `cast` helpers maps a NULL or foreign pointer to
//! its status before anything is changed. [`boundary_void!`] is the same for the few exports
//! that return nothing (the `_free` calls).

/// Runs `$body` (a block returning `Result<(), tidemark_status>`) and maps it to a status,
/// catching panics.
macro_rules! boundary {
    ($body:block) => {{
        let run = || -> ::std::result::Result<(), $crate::tidemark_status> { $body };
        match ::std::panic::catch_unwind(::std::panic::AssertUnwindSafe(run)) {
            Ok(Ok(())) => $crate::tidemark_status::Ok,
            Ok(Err(status)) => status,
            Err(_) => $crate::tidemark_status::Panic,
        }
    }};
}

/// Runs `$body` (a block returning `()`), swallowing a panic (there is no status to report it
/// through; the panic message was already printed by the panic hook).
macro_rules! boundary_void {
    ($body:block) => {{
        let run = || $body;
        let _ = ::std::panic::catch_unwind(::std::panic::AssertUnwindSafe(run));
    }};
}

#[cfg(test)]
mod tests {
    use crate::tidemark_status;

    #[test]
    fn a_panic_becomes_a_status() {
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {})); // keep the expected panic out of the output
        let status = boundary!({
            let v: Vec<u8> = Vec::new();
            let _ = v[3]; // index out of bounds: panics
            Ok(())
        });
        let mut ran = false;
        boundary_void!({
            ran = true;
            panic!("swallowed");
        });
        std::panic::set_hook(hook);
        assert_eq!(status, tidemark_status::Panic);
        assert!(ran);
    }

    #[test]
    fn errors_and_success_pass_through() {
        assert_eq!(boundary!({ Ok(()) }), tidemark_status::Ok);
        assert_eq!(
            boundary!({ Err(tidemark_status::Full) }),
            tidemark_status::Full
        );
    }
}
