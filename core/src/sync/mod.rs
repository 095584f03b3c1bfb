//! The synchronisation facade: the only module in tidemark that names atomics, locks or loom.
//!
//! Algorithm files import from `crate::sync`, never from `std::sync::atomic`, `parking_lot` or
//! `loom` directly (`core/tests/sync_facade.rs` enforces it). Under `--cfg tidemark_loom` every
//! type here maps to its loom twin so the loom models in `loom-tests/` explore the real code,
//! not a copy of it. The cfg is tidemark's own (as crossbeam uses `crossbeam_loom`): a
//! downstream crate running its own loom suite under `--cfg loom` does not rebuild tidemark on
//! loom. Outside loom the locks are `parking_lot`'s (one byte, no poisoning).
//!
//! loom treats `SeqCst` *accesses* as `AcqRel` but models `fence(SeqCst)` exactly, so every
//! store-buffering handshake in tidemark is written as "access; `fence(SeqCst)`; access" on
//! both sides, never as a pair of `SeqCst` accesses.
//!
//! Every ordering used through this facade is justified where it is used and listed in
//! `docs/MEMORY_ORDERING.md`.
// Not every primitive is used in every configuration (loom or not, every module or not).
#![allow(dead_code, unused_imports)]

#[cfg(not(tidemark_loom))]
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
        /// Waits at most `timeout`; returns true when the wait timed out. Like every condition
        /// variable it may also return spuriously: callers re-check their condition in a loop.
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
        pub(crate) fn notify_one(&self) {
            self.0.notify_one();
        }
    }
}

#[cfg(tidemark_loom)]
mod imp {
    pub(crate) use loom::sync::Arc;
    pub(crate) use loom::sync::atomic::{
        AtomicBool, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, AtomicUsize,
    };

    /// loom stand-in for the parking_lot mutex (loom's mutex poisons; we never unwind while
    /// holding one, so unwrapping is sound).
    #[derive(Default)]
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    /// Guard of [`Mutex`]. The inner guard is an `Option` only so [`Condvar::wait_for`] can hand
    /// it to loom's consuming `wait` and put it back; it is `Some` whenever user code sees it.
    pub(crate) struct MutexGuard<'a, T>(Option<loom::sync::MutexGuard<'a, T>>);

    impl<T> std::ops::Deref for MutexGuard<'_, T> {
        type Target = T;
        fn deref(&self) -> &T {
            self.0.as_ref().expect("guard present outside wait")
        }
    }

    impl<T> std::ops::DerefMut for MutexGuard<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            self.0.as_mut().expect("guard present outside wait")
        }
    }

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Mutex(loom::sync::Mutex::new(value))
        }
        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            MutexGuard(Some(self.0.lock().unwrap()))
        }
        pub(crate) fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
            self.0.try_lock().ok().map(|g| MutexGuard(Some(g)))
        }
        pub(crate) fn into_inner(self) -> T {
            self.0.into_inner().unwrap()
        }
        pub(crate) fn get_mut(&mut self) -> &mut T {
            self.0.get_mut().unwrap()
        }
    }

    /// loom's condition variable. A wait really blocks until a notification: loom has no
    /// clock, so a timed wait is an untimed one, and a model in which nobody notifies a waiter
    /// fails as a deadlock. That is what makes the wait/notify handshakes checkable.
    #[derive(Default)]
    pub(crate) struct Condvar(loom::sync::Condvar);

    impl Condvar {
        pub(crate) fn new() -> Self {
            Condvar(loom::sync::Condvar::new())
        }
        /// Waits for a notification (no timeout under loom); returns false (not timed out).
        pub(crate) fn wait_for<T>(
            &self,
            guard: &mut MutexGuard<'_, T>,
            _timeout: std::time::Duration,
        ) -> bool {
            let inner = guard.0.take().expect("guard present before wait");
            guard.0 = Some(self.0.wait(inner).unwrap());
            false
        }
        pub(crate) fn notify_all(&self) {
            self.0.notify_all();
        }
        pub(crate) fn notify_one(&self) {
            self.0.notify_one();
        }
    }
}

pub(crate) use imp::*;
pub(crate) use std::sync::atomic::Ordering;

#[cfg(tidemark_loom)]
pub(crate) use loom::sync::atomic::fence;
#[cfg(not(tidemark_loom))]
pub(crate) use std::sync::atomic::fence;

/// Pads and aligns a value to a cache line so atomics written by different threads do not share
/// one (false sharing).
pub(crate) use crossbeam_utils::CachePadded;

/// A number no other call in this process returns (for keys that must never be reused). A
/// plain std atomic even under loom: it is not part of any modelled protocol.
pub(crate) fn unique_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    // Relaxed: only uniqueness matters.
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// True when built for the loom models (capacities shrink so models stay small).
pub(crate) const LOOM: bool = cfg!(tidemark_loom);

/// An `UnsafeCell` with closure-based access, so loom can check every access for data races.
///
/// The std variant compiles to a plain `std::cell::UnsafeCell`; the loom variant records each
/// `with`/`with_mut` and fails the model when two of them race.
#[cfg(not(tidemark_loom))]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(tidemark_loom))]
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
#[cfg(tidemark_loom)]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(loom::cell::UnsafeCell<T>);

#[cfg(tidemark_loom)]
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
    #[cfg(not(tidemark_loom))]
    std::hint::spin_loop();
    #[cfg(tidemark_loom)]
    loom::hint::spin_loop();
}

/// Gives the rest of this thread's time slice away (under loom: lets another thread run).
#[inline]
pub(crate) fn yield_now() {
    #[cfg(not(tidemark_loom))]
    std::thread::yield_now();
    #[cfg(tidemark_loom)]
    loom::thread::yield_now();
}

/// Sleeps the current thread for `duration` (under loom, where there is no time: yields).
#[inline]
pub(crate) fn sleep(duration: std::time::Duration) {
    #[cfg(not(tidemark_loom))]
    std::thread::sleep(duration);
    #[cfg(tidemark_loom)]
    {
        let _ = duration;
        loom::thread::yield_now();
    }
}

/// Bounded busy-waiting for another thread that is a few instructions away from finishing:
/// spin briefly, then yield, then sleep in short naps (never an unbounded spin). Under loom
/// every step yields, so the model schedules the thread being waited for.
pub(crate) struct Backoff {
    step: u32,
}

impl Backoff {
    pub(crate) fn new() -> Backoff {
        Backoff { step: 0 }
    }

    pub(crate) fn snooze(&mut self) {
        if LOOM {
            yield_now();
        } else if self.step < 4 {
            for _ in 0..(1u32 << self.step) {
                spin_hint();
            }
        } else if self.step < 12 {
            yield_now();
        } else {
            sleep(std::time::Duration::from_micros(50));
        }
        self.step = self.step.saturating_add(1);
    }
}

/// Types whose all-zero bit pattern is a valid value (atomics, plain integers, arrays of
/// them), so big tables of them can come from a zeroed allocation: the OS hands out zero pages
/// lazily, so allocating a segment costs O(1), not O(len), and untouched parts cost no memory.
///
/// # Safety
///
/// An implementor must be valid when every byte is zero, and `Default::default()` must equal
/// that value (the loom build constructs with `Default` instead).
pub(crate) unsafe trait Zeroable: Default {}

/// Allocates `len` zeroed values of `T`; `None` when the allocator refuses (the caller reports
/// it as an error: an allocation failure must never abort the host).
#[cfg(not(tidemark_loom))]
pub(crate) fn alloc_zeroed_slice<T: Zeroable>(len: usize) -> Option<*mut T> {
    let layout = std::alloc::Layout::array::<T>(len).ok()?;
    if layout.size() == 0 {
        return Some(std::ptr::NonNull::<T>::dangling().as_ptr());
    }
    // SAFETY: the layout has a non-zero size (checked above).
    let raw = unsafe { std::alloc::alloc_zeroed(layout) } as *mut T;
    (!raw.is_null()).then_some(raw)
}

/// loom variant of [`alloc_zeroed_slice`]: loom's atomics carry model state, so they are built
/// with `Default` (equal to zero by the [`Zeroable`] contract).
#[cfg(tidemark_loom)]
pub(crate) fn alloc_zeroed_slice<T: Zeroable>(len: usize) -> Option<*mut T> {
    let b: Box<[T]> = (0..len).map(|_| T::default()).collect();
    Some(Box::into_raw(b) as *mut T)
}

/// Frees what [`alloc_zeroed_slice`] returned, dropping every value.
///
/// # Safety
///
/// `ptr` must come from `alloc_zeroed_slice::<T>(len)` with the same `len`, must not be freed
/// twice, and no reference into it may be alive.
pub(crate) unsafe fn free_zeroed_slice<T: Zeroable>(ptr: *mut T, len: usize) {
    let slice = std::ptr::slice_from_raw_parts_mut(ptr, len);
    #[cfg(not(tidemark_loom))]
    {
        // SAFETY: the caller guarantees the slice is live and initialised (zeroed values are
        // valid `T`s by the `Zeroable` contract) and unaliased.
        unsafe { std::ptr::drop_in_place(slice) };
        let layout = std::alloc::Layout::array::<T>(len).expect("allocated with this layout");
        if layout.size() != 0 {
            // SAFETY: allocated by `alloc_zeroed` with exactly this layout (caller contract).
            unsafe { std::alloc::dealloc(ptr as *mut u8, layout) };
        }
    }
    #[cfg(tidemark_loom)]
    {
        // SAFETY: under loom the slice came from `Box::into_raw` of a boxed slice of `len`.
        drop(unsafe { Box::from_raw(slice) });
    }
}

// SAFETY: zero is a valid atomic integer, and their `Default` is zero.
unsafe impl Zeroable for AtomicU64 {}
// SAFETY: as above.
unsafe impl Zeroable for AtomicU32 {}

/// A lock that costs one RMW to take and a plain store to release, for state that one thread
/// uses almost always (the committer's) and others only now and then. A waiter backs off
/// (spin, yield, short sleeps), so it suits critical sections of a few microseconds only.
pub(crate) struct SpinLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the value is only reached through a guard, and at most one guard exists at a time
// (the `locked` flag); `T: Send` lets the value be used from whichever thread holds it.
unsafe impl<T: Send> Sync for SpinLock<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for SpinLock<T> {}

impl<T> SpinLock<T> {
    pub(crate) fn new(value: T) -> Self {
        SpinLock {
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// Takes the lock, backing off while another thread holds it.
    #[inline]
    pub(crate) fn lock(&self) -> SpinGuard<'_, T> {
        // Acquire: pairs with the Release store in `SpinGuard::drop`, so we see everything the
        // previous holder wrote.
        if self
            .locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_slow();
        }
        SpinGuard { lock: self }
    }

    #[cold]
    fn lock_slow(&self) {
        let mut backoff = Backoff::new();
        loop {
            backoff.snooze();
            // Relaxed look first, so waiters do not bounce the line with failed RMWs.
            if !self.locked.load(Ordering::Relaxed)
                && self
                    .locked
                    .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return;
            }
        }
    }

    pub(crate) fn get_mut(&mut self) -> &mut T {
        // SAFETY: `&mut self` proves no guard exists.
        self.value.with_mut(|p| unsafe { &mut *p })
    }
}

/// The holder's access to a [`SpinLock`]'s value.
pub(crate) struct SpinGuard<'a, T> {
    lock: &'a SpinLock<T>,
}

impl<T> std::ops::Deref for SpinGuard<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: the guard exists only while the flag is held by us: no other access.
        self.lock.value.with(|p| unsafe { &*p })
    }
}

impl<T> std::ops::DerefMut for SpinGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` makes this the only reference.
        self.lock.value.with_mut(|p| unsafe { &mut *p })
    }
}

impl<T> Drop for SpinGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        // Release: publishes what we wrote to the next holder's Acquire.
        self.lock.locked.store(false, Ordering::Release);
    }
}
