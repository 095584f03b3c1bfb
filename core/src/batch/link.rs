//! The tracker link: acked batches report their offsets as `flushed` for one tracker writer, so a
//! storage flush and the source acknowledgement are one pipeline (docs/CONTRACT.md §5, last point).
use std::sync::Arc;

use super::types::{FlushLink, LinkError};
use crate::{Offset, Tracker, TrackerError, WriterId};

/// A [`FlushLink`] to one writer of a [`Tracker`]: put it in
/// [`BatchConfig::flush_link`](super::BatchConfig::flush_link).
///
/// The buffer calls it after an ack with the highest offset below which every message is
/// delivered or failed, and with its clock's time in milliseconds as `now` (so inject a clock
/// that shares the tracker's time base).
#[derive(Clone, Debug)]
pub struct TrackerLink {
    tracker: Arc<Tracker>,
    writer: WriterId,
}

impl TrackerLink {
    /// Links to `writer` of `tracker`.
    pub fn new(tracker: Arc<Tracker>, writer: WriterId) -> TrackerLink {
        TrackerLink { tracker, writer }
    }

    /// The linked writer.
    pub fn writer(&self) -> WriterId {
        self.writer
    }
}

impl FlushLink for TrackerLink {
    fn flushed(&self, offset: Offset, now_ms: u64) -> Result<(), LinkError> {
        self.tracker
            .flushed(self.writer, offset, now_ms)
            .map_err(|e| LinkError(Box::new(e)))
    }
}

impl LinkError {
    /// The tracker's error, when the link is a [`TrackerLink`].
    pub fn tracker_error(&self) -> Option<&TrackerError> {
        self.0.downcast_ref::<TrackerError>()
    }
}
