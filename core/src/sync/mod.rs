//! The synchronisation facade: the only module in tidemark that names atomics, locks or loom.
//!
//! Algorithm files import from `crate::sync`, never from `std::sync::atomic`, `parking_lot` or
//! `loom` directly (`core/tests/sync_facade.rs` enforces it). Under `--cfg loom`
//! every type here maps to its loom twin so the loom models in `loom-tests/` explore the real
//! code, not a copy of it. Outside loom the locks are `parking_lot`'s (one byte, no poisoning).
//!
//! Every ordering used through this facade is justified where it is used and listed in
//! `docs/MEMORY_ORDERING.md`.
// Not every primitive is used in every configuration (loom or not, every module or not).
#![allow(dead_code, unused_imports)]

#[cfg(not(loom))]
mod imp {
    pub(crate) use std::sync::Arc;
    pub(crate) use std::sync::atomic::{
        AtomicBool, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, AtomicUsize,
    };

    /// A mutual-exclusion lock without poisoning (parking_lot's one-byte lock).
    #[derive(Default)]
    pub(crate) struct Mutex<T>(parking_lot::Mutex<T>);
    /// Guard of [`Mutex`].
    pub(crate) type MutexGuard<'a, T> = parking_lot::MutexGuard<'a, T>;

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Mutex(parking_lot::Mutex::new(value))
        }
        #[inline]
        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            self.0.lock()
        }
        #[inline]
        pub(crate) fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
            self.0.try_lock()
        }
        pub(crate) fn into_inner(self) -> T {
            self.0.into_inner()
        }
        #[allow(dead_code)]
        pub(crate) fn get_mut(&mut self) -> &mut T {
            self.0.get_mut()
        }
    }

    /// A condition variable paired with [`Mutex`].
    #[derive(Default)]
    pub(crate) struct Condvar(parking_lot::Condvar);

    impl Condvar {
        pub(crate) fn new() -> Self {
            Condvar(parking_lot::Condvar::new())
        }
        /// Waits at most `timeout`; returns true when the wait timed out.
        pub(crate) fn wait_for<T>(
            &self,
            guard: &mut MutexGuard<'_, T>,
            timeout: std::time::Duration,
        ) -> bool {
            self.0.wait_for(guard, timeout).timed_out()
        }
        pub(crate) fn notify_all(&self) {
            self.0.notify_all();
        }
        #[allow(dead_code)]
        pub(crate) fn notify_one(&self) {
            self.0.notify_one();
        }
    }
}

#[cfg(loom)]
mod imp {
    pub(crate) use loom::sync::Arc;
    pub(crate) use loom::sync::atomic::{
        AtomicBool, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, AtomicUsize,
    };

    /// loom stand-in for the parking_lot mutex (loom's mutex poisons; we never unwind while
    /// holding one, so unwrapping is sound).
    #[derive(Default)]
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);
    /// Guard of [`Mutex`].
    pub(crate) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Mutex(loom::sync::Mutex::new(value))
        }
        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            self.0.lock().unwrap()
        }
        pub(crate) fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
            self.0.try_lock().ok()
        }
        pub(crate) fn into_inner(self) -> T {
            self.0.into_inner().unwrap()
        }
        #[allow(dead_code)]
        pub(crate) fn get_mut(&mut self) -> &mut T {
            self.0.get_mut().unwrap()
        }
    }

    /// loom stand-in for the parking_lot condition variable. loom has no notion of time, so a
    /// timed wait is modelled as a wait that may also return spuriously; callers re-check their
    /// condition in a loop, as they must with any condition variable.
    #[derive(Default)]
    pub(crate) struct Condvar(loom::sync::Condvar);

    impl Condvar {
        pub(crate) fn new() -> Self {
            Condvar(loom::sync::Condvar::new())
        }
        pub(crate) fn wait_for<T>(
            &self,
            guard: &mut MutexGuard<'_, T>,
            _timeout: std::time::Duration,
        ) -> bool {
            // loom cannot model a timeout; report one so callers never block a model forever.
            let _ = guard;
            true
        }
        pub(crate) fn notify_all(&self) {
            self.0.notify_all();
        }
        #[allow(dead_code)]
        pub(crate) fn notify_one(&self) {
            self.0.notify_one();
        }
    }
}

pub(crate) use imp::*;
pub(crate) use std::sync::atomic::Ordering;

#[cfg(loom)]
pub(crate) use loom::sync::atomic::fence;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::fence;

/// Pads and aligns a value to a cache line so atomics written by different threads do not share
/// one (false sharing).
pub(crate) use crossbeam_utils::CachePadded;

// ---------------------------------------------------------------------------------------------
// Added for the batch buffer (core/src/batch/): an `UnsafeCell` whose accesses loom can track,
// and the two ways a thread may wait for another without a lock (spin hint, yield).
// ---------------------------------------------------------------------------------------------

/// An `UnsafeCell` with closure-based access, so loom can check every access for data races.
///
/// The std variant compiles to a plain `std::cell::UnsafeCell`; the loom variant records each
/// `with`/`with_mut` and fails the model when two of them race.
#[cfg(not(loom))]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    pub(crate) const fn new(value: T) -> Self {
        UnsafeCell(std::cell::UnsafeCell::new(value))
    }
    /// Runs `f` with a shared raw pointer to the value.
    #[inline(always)]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }
    /// Runs `f` with an exclusive raw pointer to the value.
    #[inline(always)]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// loom variant of [`UnsafeCell`].
#[cfg(loom)]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(loom::cell::UnsafeCell<T>);

#[cfg(loom)]
impl<T> UnsafeCell<T> {
    pub(crate) fn new(value: T) -> Self {
        UnsafeCell(loom::cell::UnsafeCell::new(value))
    }
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        self.0.with(f)
    }
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        self.0.with_mut(f)
    }
}

/// Tells the CPU (or loom's scheduler) that this thread is busy-waiting for another one.
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(not(loom))]
    std::hint::spin_loop();
    #[cfg(loom)]
    loom::hint::spin_loop();
}

/// Gives the rest of this thread's time slice away (under loom: lets another thread run).
#[inline]
pub(crate) fn yield_now() {
    #[cfg(not(loom))]
    std::thread::yield_now();
    #[cfg(loom)]
    loom::thread::yield_now();
}

/// Sleeps the current thread for `duration` (under loom, where there is no time: yields).
#[inline]
pub(crate) fn sleep(duration: std::time::Duration) {
    #[cfg(not(loom))]
    std::thread::sleep(duration);
    #[cfg(loom)]
    {
        let _ = duration;
        loom::thread::yield_now();
    }
}
