//! What decides the acknowledgement: tidemark's [`Tracker`], or Electric's algorithm
//! ([`ElectricTracker`]: the minimum over writers of what each flushed, no staleness sweeps).
//! Both see the same commits and the same flush reports (through each buffer's flush link).

use std::sync::{Arc, Mutex};

use tidemark::batch::{FlushLink, LinkError, TrackerLink};
use tidemark::{DownClass, Offset, Tracker, TrackerError, TrackerOptions, WriterId};
use tidemark_testkit::model::ElectricTracker;

use super::config::{Config, TrackerKind};

/// The tracker of a run.
pub(crate) enum Source {
    /// tidemark, with the writers' ids by index.
    Tidemark(Arc<Tracker>, Vec<WriterId>),
    /// Electric's reference algorithm, keyed by writer index.
    Electric(Arc<Mutex<ElectricTracker<u32>>>),
}

/// Why a commit was not taken.
pub(crate) enum CommitError {
    /// This writer was evicted since it was chosen: choose again without it.
    Evicted(u32),
    /// Anything else (a bug).
    Other(String),
}

impl Source {
    /// A tracker for `cfg` with `cfg.writers` writers registered (index = slot).
    pub(crate) fn new(cfg: &Config) -> Result<Source, String> {
        match cfg.tracker {
            TrackerKind::Tidemark => {
                let tracker = Arc::new(
                    Tracker::new(TrackerOptions {
                        expected_writers: cfg.common.writers,
                        stall_grace_ms: cfg.common.grace_ms,
                        ..Default::default()
                    })
                    .map_err(|e| format!("tracker: {e}"))?,
                );
                let mut ids = Vec::with_capacity(cfg.common.writers);
                for i in 0..cfg.common.writers {
                    let id = tracker.register().map_err(|e| format!("register: {e}"))?;
                    if id.index() as usize != i {
                        return Err(format!("register: expected slot {i}, got {id}"));
                    }
                    ids.push(id);
                }
                Ok(Source::Tidemark(tracker, ids))
            }
            TrackerKind::Electric => Ok(Source::Electric(Arc::new(Mutex::new(
                ElectricTracker::new(),
            )))),
        }
    }

    /// The flush link for writer `i`'s buffer.
    pub(crate) fn link(&self, i: u32) -> Arc<dyn FlushLink> {
        match self {
            Source::Tidemark(t, ids) => Arc::new(TrackerLink::new(Arc::clone(t), ids[i as usize])),
            Source::Electric(m) => Arc::new(ElectricLink {
                model: Arc::clone(m),
                writer: i,
            }),
        }
    }

    /// A commit at `offset` delivered to `writers` (indexes).
    pub(crate) fn commit(
        &self,
        offset: Offset,
        writers: &[u32],
        scratch: &mut Vec<WriterId>,
        now_ms: u64,
    ) -> Result<(), CommitError> {
        match self {
            Source::Tidemark(t, ids) => {
                scratch.clear();
                scratch.extend(writers.iter().map(|&i| ids[i as usize]));
                t.commit(offset, scratch, now_ms).map_err(|e| match e {
                    TrackerError::EvictedWriter(w) => CommitError::Evicted(w.index()),
                    e => CommitError::Other(e.to_string()),
                })
            }
            Source::Electric(m) => {
                m.lock().unwrap().commit(offset, writers);
                Ok(())
            }
        }
    }

    /// The ack: every commit at or below it is done.
    pub(crate) fn ack(&self) -> Option<u64> {
        match self {
            Source::Tidemark(t, _) => t.ack(),
            Source::Electric(m) => m.lock().unwrap().ack(),
        }
    }

    /// The host's process monitor saw writer `i` die. Electric's algorithm has no such input.
    pub(crate) fn teardown(&self, i: u32, now_ms: u64) {
        if let Source::Tidemark(t, ids) = self {
            let _ = t.down(ids[i as usize], DownClass::Teardown, now_ms);
        }
    }

    /// The tidemark tracker, when that is the source.
    pub(crate) fn tracker(&self) -> Option<&Arc<Tracker>> {
        match self {
            Source::Tidemark(t, _) => Some(t),
            Source::Electric(_) => None,
        }
    }
}

/// A [`FlushLink`] into the Electric reference algorithm.
#[derive(Debug)]
struct ElectricLink {
    model: Arc<Mutex<ElectricTracker<u32>>>,
    writer: u32,
}

impl FlushLink for ElectricLink {
    fn flushed(&self, offset: Offset, _now_ms: u64) -> Result<(), LinkError> {
        self.model.lock().unwrap().flushed(self.writer, offset);
        Ok(())
    }
}
