//! The only module that turns raw pointers into references, slices or boxes, and back.
//!
//! A handle given to C points to a [`Handle<T>`]: a magic number naming the type, then the
//! value. Borrowing checks the pointer for NULL, alignment and the magic number, so a live
//! handle of another type is refused with `INVALID_HANDLE` instead of being used. A freed
//! handle, or a pointer to memory that is not a handle, is not detected: using one is undefined
//! behaviour, as documented in docs/ABI.md ("Freed and foreign handles"). A `_free` overwrites
//! the magic number before releasing the memory, only as a debugging aid.

use std::mem::align_of;
use std::ptr::NonNull;

use crate::tidemark_status;

/// What a handle holds, and its magic number.
pub(crate) trait Kind: Sized {
    /// The opaque C type the handle is presented as.
    type Opaque;
    /// The magic number stored first in the handle (a function, not a constant, so that
    /// cbindgen does not try to export it).
    fn magic() -> u64;
}

/// The allocation behind every handle. `repr(C)`: the magic number is at offset 0 for every `T`,
/// so it can be read through a pointer of any handle type.
#[repr(C)]
struct Handle<T> {
    magic: u64,
    value: T,
}

/// Moves `value` to the heap and returns the pointer C will hold.
pub(crate) fn into_raw<T: Kind>(value: T) -> *mut T::Opaque {
    Box::into_raw(Box::new(Handle {
        magic: T::magic(),
        value,
    }))
    .cast()
}

/// Checks a handle pointer: not NULL, aligned, carrying `T`'s magic number.
///
/// # Safety
/// `p` must be NULL or point to readable memory of at least 8 bytes (a live handle of any type
/// satisfies this).
unsafe fn check<T: Kind>(p: *const T::Opaque) -> Result<NonNull<Handle<T>>, tidemark_status> {
    let p = NonNull::new(p.cast_mut().cast::<Handle<T>>()).ok_or(tidemark_status::NullArgument)?;
    if (p.as_ptr() as usize) % align_of::<Handle<T>>() != 0 {
        return Err(tidemark_status::InvalidHandle);
    }
    // SAFETY: the caller guarantees 8 readable bytes; `Handle` is repr(C) with the u64 magic at
    // offset 0 for every T, and the pointer is aligned for it (checked above).
    let magic = unsafe { p.cast::<u64>().as_ptr().read() };
    if magic != T::magic() {
        return Err(tidemark_status::InvalidHandle);
    }
    Ok(p)
}

/// Borrows the value behind a handle for the duration of a call.
///
/// # Safety
/// `p` must be NULL or a pointer returned by [`into_raw`] (for any `Kind`) that has not been
/// passed to [`take`]; no `take` of it may run during the borrow.
pub(crate) unsafe fn borrow<'a, T: Kind>(p: *const T::Opaque) -> Result<&'a T, tidemark_status> {
    // SAFETY: forwarded contract: a live handle has its 8-byte magic first.
    let h = unsafe { check::<T>(p)? };
    // SAFETY: the magic matched, so this is a live `Handle<T>` made by `into_raw`; the caller
    // guarantees it is not freed during the borrow. Only shared references are ever made.
    Ok(unsafe { &h.as_ref().value })
}

/// Takes the value back out of a handle and releases the handle's memory.
///
/// # Safety
/// As for [`borrow`], and no other call may use the handle concurrently or afterwards.
pub(crate) unsafe fn take<T: Kind>(p: *mut T::Opaque) -> Result<T, tidemark_status> {
    // SAFETY: forwarded contract.
    let h = unsafe { check::<T>(p)? };
    // SAFETY: a live `Handle<T>` made by `Box::into_raw` in `into_raw`; the caller guarantees
    // exclusive access. The magic is overwritten first so that a later use is likely refused.
    unsafe {
        (*h.as_ptr()).magic = 0xdead_f7ee_dead_f7ee;
        Ok(Box::from_raw(h.as_ptr()).value)
    }
}

/// Borrows a caller's input struct.
///
/// # Safety
/// `p` must be NULL or point to a valid, initialised `T` that stays unchanged during the call.
pub(crate) unsafe fn input<'a, T>(p: *const T) -> Result<&'a T, tidemark_status> {
    let p = NonNull::new(p.cast_mut()).ok_or(tidemark_status::NullArgument)?;
    if (p.as_ptr() as usize) % align_of::<T>() != 0 {
        return Err(tidemark_status::InvalidArgument);
    }
    // SAFETY: non-NULL and aligned (checked); valid and unchanged per the caller's contract.
    Ok(unsafe { p.as_ref() })
}

/// Borrows a caller's array of `n` elements. With `n == 0` the pointer may be NULL.
///
/// # Safety
/// When `n > 0`, `p` must be NULL or point to `n` valid, initialised `T` that stay unchanged
/// during the call.
pub(crate) unsafe fn slice<'a, T>(p: *const T, n: usize) -> Result<&'a [T], tidemark_status> {
    if n == 0 {
        return Ok(&[]);
    }
    let p = checked_array(p.cast_mut(), n)?;
    // SAFETY: non-NULL, aligned, size within isize::MAX (checked); valid per the caller.
    Ok(unsafe { std::slice::from_raw_parts(p.as_ptr(), n) })
}

/// Borrows a caller's writable array of `n` elements (to be filled). With `n == 0` the pointer
/// may be NULL.
///
/// # Safety
/// When `n > 0`, `p` must be NULL or point to `n` writable `T` (initialised or not: they are
/// only written) that no one else accesses during the call.
pub(crate) unsafe fn slice_out<'a, T>(
    p: *mut T,
    n: usize,
) -> Result<OutSlice<'a, T>, tidemark_status> {
    if n == 0 {
        return Ok(OutSlice(&mut []));
    }
    let p = checked_array(p, n)?;
    // SAFETY: non-NULL, aligned, size within isize::MAX (checked); exclusively ours for the
    // call per the caller. Viewed as MaybeUninit, so uninitialised memory is fine.
    Ok(OutSlice(unsafe {
        std::slice::from_raw_parts_mut(p.as_ptr().cast::<std::mem::MaybeUninit<T>>(), n)
    }))
}

fn checked_array<T>(p: *mut T, n: usize) -> Result<NonNull<T>, tidemark_status> {
    let p = NonNull::new(p).ok_or(tidemark_status::NullArgument)?;
    if (p.as_ptr() as usize) % align_of::<T>() != 0 {
        return Err(tidemark_status::InvalidArgument);
    }
    match n.checked_mul(size_of::<T>().max(1)) {
        Some(bytes) if bytes <= isize::MAX as usize => Ok(p),
        _ => Err(tidemark_status::InvalidArgument),
    }
}

/// A caller's array, written element by element.
pub(crate) struct OutSlice<'a, T>(&'a mut [std::mem::MaybeUninit<T>]);

impl<T> OutSlice<'_, T> {
    /// The number of elements the caller provided.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// Writes element `i` (panics if out of range; callers check `len` first).
    pub(crate) fn set(&mut self, i: usize, value: T) {
        self.0[i].write(value);
    }

    /// Copies `src` to elements `at..at + src.len()` (panics if out of range).
    pub(crate) fn copy_at(&mut self, at: usize, src: &[T])
    where
        T: Copy,
    {
        for (d, s) in self.0[at..at + src.len()].iter_mut().zip(src) {
            d.write(*s);
        }
    }
}

/// A checked out-parameter: written once, at the end of a successful call.
pub(crate) struct Out<T>(NonNull<T>);

/// Checks an out-parameter pointer.
///
/// # Safety
/// `p` must be NULL or point to writable memory for a `T` that no one else accesses during the
/// call.
pub(crate) unsafe fn out<T>(p: *mut T) -> Result<Out<T>, tidemark_status> {
    let p = NonNull::new(p).ok_or(tidemark_status::NullArgument)?;
    if (p.as_ptr() as usize) % align_of::<T>() != 0 {
        return Err(tidemark_status::InvalidArgument);
    }
    Ok(Out(p))
}

impl<T> Out<T> {
    /// Writes the result (without reading or dropping what was there: C memory).
    pub(crate) fn write(self, value: T) {
        // SAFETY: checked non-NULL and aligned in `out`; writable and exclusive per its contract.
        unsafe { self.0.as_ptr().write(value) }
    }
}
