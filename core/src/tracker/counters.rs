//! Flush-report counters without a read-modify-write on the flush path.
//!
//! Every flush report is counted (`TrackerStats::flushes`, `late_flushes`, and the completions
//! that give `pending`). A shared `fetch_add` would cost one locked instruction per report
//! (about 9 ns on the development VM, a third of a writer-op's budget) and bounce a line
//! between flusher threads. Instead each thread counts in its own block (a load and a store),
//! found through a one-entry thread-local cache keyed by the tracker's unique id; the tracker
//! keeps every block it handed out, so `stats` sums them, exactly once all reports returned.
//! Under loom (no thread-locals in the models) one shared block counts with `fetch_add`.

use crate::sync::{AtomicU64, Mutex, Ordering};

/// One thread's counts for one tracker.
#[derive(Default)]
pub(super) struct Block {
    /// Reports that completed a stint.
    pub(super) completions: AtomicU64,
    /// Other reports of live writers (partial progress, no progress).
    pub(super) other: AtomicU64,
    /// Reports for writers that were not pending.
    pub(super) late: AtomicU64,
}

impl Block {
    /// `counter += 1`. Outside loom only the owning thread writes its block, so a load and a
    /// store suffice; readers (`stats`) may see a value one behind, never a torn one.
    #[inline]
    pub(super) fn bump(counter: &AtomicU64) {
        if crate::sync::LOOM {
            // Relaxed: a statistic (one block shared by the model's threads).
            counter.fetch_add(1, Ordering::Relaxed);
        } else {
            // Relaxed: a statistic with a single writer.
            counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        }
    }
}

/// The counter blocks of one tracker.
pub(super) struct FlushCounters {
    /// Unique among all trackers of the process (never reused), the thread-local cache key.
    #[cfg_attr(
        tidemark_loom,
        allow(dead_code, reason = "loom models count in `shared`")
    )]
    id: u64,
    #[cfg_attr(
        tidemark_loom,
        allow(dead_code, reason = "loom models count in `shared`")
    )]
    blocks: Mutex<Vec<std::sync::Arc<Block>>>,
    #[cfg(tidemark_loom)]
    shared: Block,
}

#[cfg(not(tidemark_loom))]
mod local {
    use super::Block;
    use std::cell::{Cell, RefCell};
    use std::sync::Arc;

    thread_local! {
        /// The block this thread used last: (tracker id, block). The pointer is kept alive by
        /// `OWNED` below, which holds a reference to every block this thread was given.
        pub(super) static CACHE: Cell<(u64, *const Block)> =
            const { Cell::new((0, std::ptr::null())) };
        /// This thread's blocks, one per tracker it reported to.
        pub(super) static OWNED: RefCell<Vec<(u64, Arc<Block>)>> = const { RefCell::new(Vec::new()) };
    }
}

impl FlushCounters {
    pub(super) fn new() -> Self {
        FlushCounters {
            id: crate::sync::unique_id(),
            blocks: Mutex::new(Vec::new()),
            #[cfg(tidemark_loom)]
            shared: Block::default(),
        }
    }

    /// Runs `f` with this thread's block for this tracker.
    #[inline]
    pub(super) fn with<R>(&self, f: impl FnOnce(&Block) -> R) -> R {
        #[cfg(tidemark_loom)]
        {
            f(&self.shared)
        }
        #[cfg(not(tidemark_loom))]
        {
            let (id, block) = local::CACHE.with(std::cell::Cell::get);
            if id == self.id {
                // SAFETY: the cache names a block of `OWNED` (this thread's), which is only
                // pruned in `with_slow` after the cache is repointed; the `Arc` there keeps it
                // alive for as long as this thread lives.
                return f(unsafe { &*block });
            }
            self.with_slow(f)
        }
    }

    #[cfg(not(tidemark_loom))]
    #[cold]
    fn with_slow<R>(&self, f: impl FnOnce(&Block) -> R) -> R {
        let block = local::OWNED.with(|owned| {
            let mut owned = owned.borrow_mut();
            // Blocks of trackers that were dropped (only this thread still holds them): gone.
            owned.retain(|(_, b)| std::sync::Arc::strong_count(b) > 1);
            if let Some((_, b)) = owned.iter().find(|(id, _)| *id == self.id) {
                return std::sync::Arc::clone(b);
            }
            let b = std::sync::Arc::new(Block::default());
            self.blocks.lock().push(std::sync::Arc::clone(&b));
            owned.push((self.id, std::sync::Arc::clone(&b)));
            b
        });
        local::CACHE.with(|c| c.set((self.id, std::sync::Arc::as_ptr(&block))));
        f(&block)
    }

    /// Sums one field over every block.
    pub(super) fn sum(&self, field: fn(&Block) -> &AtomicU64) -> u64 {
        // Relaxed: statistics.
        #[cfg(tidemark_loom)]
        {
            field(&self.shared).load(Ordering::Relaxed)
        }
        #[cfg(not(tidemark_loom))]
        {
            self.blocks
                .lock()
                .iter()
                .map(|b| field(b).load(Ordering::Relaxed))
                .sum()
        }
    }
}
