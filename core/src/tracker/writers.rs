//! Writers: registration, unregistration, status.

use super::cell::{Meta, Status};
use super::entry::HEAD;
use super::{Bound, EvictedBy, Tracker, TrackerError, WriterId, WriterStatus};
use crate::sync::Ordering;

impl Tracker {
    /// Registers a new writer. Fails with `CapacityExceeded` past `max_writers`, and with
    /// `OutOfMemory` when the cell table cannot grow (nothing changes then).
    pub fn register(&self) -> Result<WriterId, TrackerError> {
        match self.register_with(true)? {
            Some(id) => Ok(id),
            None => unreachable!("register_with(true) allocates instead of declining"),
        }
    }

    /// Registers a new writer only if that needs no allocation: `Ok(None)` (nothing changed)
    /// when the cell table would have to grow first. O(1) and allocation-free, so a host that
    /// must not allocate on the calling thread (a BEAM scheduler) can try this first and fall
    /// back to [`register`](Self::register) elsewhere. Errors as `register`.
    pub fn register_if_allocated(&self) -> Result<Option<WriterId>, TrackerError> {
        self.register_with(false)
    }

    pub(super) fn register_with(
        &self,
        may_allocate: bool,
    ) -> Result<Option<WriterId>, TrackerError> {
        let mut reg = self.registry.lock();
        if reg.registered as usize >= self.max_writers {
            return Err(TrackerError::CapacityExceeded {
                max_writers: self.max_writers,
            });
        }
        let index = match reg.free.pop() {
            Some(i) => i,
            None => {
                if reg.next >= self.max_writers as u64 {
                    // Every index below the limit is in use or retired (generation exhausted).
                    return Err(TrackerError::CapacityExceeded {
                        max_writers: self.max_writers,
                    });
                }
                if self.cells.get(reg.next as u32).is_none() {
                    if !may_allocate {
                        return Ok(None);
                    }
                    // Zeroed segments: O(1) even when the table doubles.
                    self.cells.ensure(reg.next as u32)?;
                }
                reg.next += 1;
                (reg.next - 1) as u32
            }
        };
        reg.registered += 1;
        let cell = self.cells.get(index).expect("ensured above");
        // Relaxed load: free cells' meta only changes under the registry lock (we hold it).
        let meta = Meta(cell.meta.load(Ordering::Relaxed));
        debug_assert_eq!(meta.status(), Status::Free);
        let generation = meta.generation();
        // Release: a thread that looks the new id up (after learning it from us through some
        // synchronising channel) sees the cell registered. A plain store is enough: nobody CASes
        // a free cell's meta (every CAS follows a successful lookup of a registered id).
        cell.meta
            .store(Meta::registered(generation).0, Ordering::Release);
        Ok(Some(WriterId::new(index, generation)))
    }

    /// Releases a writer's id (any status, evicted included). If it was pending it unpins now,
    /// like `remove`. The id is stale afterwards: using it fails with `UnknownWriter`.
    pub fn unregister(&self, writer: WriterId) -> Result<(), TrackerError> {
        let cell = self.cell(writer)?;
        // Under the commit lock: a commit either saw the writer registered and finished (its
        // stint is ended below), or sees it unregistered.
        let committer = self.committer.lock();
        let mut reg = self.registry.lock();
        let mut meta = Meta(cell.meta.load(Ordering::Acquire));
        let next_gen = loop {
            if !meta.holds(writer) {
                return Err(TrackerError::UnknownWriter(writer));
            }
            let next_gen = writer.generation().wrapping_add(1);
            // AcqRel: the linearisation point of the unregister; ordered with flags and
            // evictions changing the same word.
            match cell.meta.compare_exchange(
                meta.0,
                Meta::free(next_gen).0,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break next_gen,
                Err(actual) => meta = Meta(actual),
            }
        };
        reg.registered -= 1;
        if next_gen != 0 {
            reg.free.push(writer.index());
        }
        drop(reg);
        // `Err`: an eviction is ending the stint right now; it unpins it either way.
        let ended = match self.bound(cell, writer) {
            Ok(Bound::Live { entry, tag, .. }) => self.end_stint_quiet(entry, tag, writer, None),
            _ => None,
        };
        drop(committer);
        // One budget per call: a call that drained for the released head helps no backlog.
        if ended.is_some_and(|s| s.has(HEAD)) {
            self.head_released(None);
        } else {
            self.help_backlog(None);
        }
        Ok(())
    }

    /// What the writer is doing.
    pub fn writer_status(&self, writer: WriterId) -> Result<WriterStatus, TrackerError> {
        let cell = self.cell(writer)?;
        let meta = Meta(cell.meta.load(Ordering::Acquire));
        if !meta.holds(writer) {
            return Err(TrackerError::UnknownWriter(writer));
        }
        if meta.status() == Status::Evicted {
            return Ok(WriterStatus::Evicted(
                meta.reason().expect("evicted cells record a reason"),
            ));
        }
        Ok(match self.bound(cell, writer) {
            Ok(Bound::Live { .. }) => WriterStatus::Pending,
            Ok(Bound::Idle) => WriterStatus::Idle,
            Err(EvictedBy(reason)) => WriterStatus::Evicted(reason),
        })
    }
}
