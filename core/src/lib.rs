//! tidemark: the native core of a replication pipeline.
//!
//! - [`Tracker`]: flush-offset tracking. Writers receive commits at log offsets and later report
//!   what they flushed; the tracker computes the position the host may acknowledge upstream,
//!   exactly, without a global lock on the flush path. It also detects writers that were killed
//!   without cleanup or are wedged (staleness sweeps) and evicts them with a report.
//! - [`batch`]: batch buffers (many producers, one sink, bounded memory, drain on stop).
//!
//! See `docs/ARCHITECTURE.md` for the structures and the memory-ordering argument.

// The oracles' source (shared with tidemark-testkit below) names this crate `tidemark`.
extern crate self as tidemark;

pub(crate) mod sync;

pub mod batch;
// Kept for code written against earlier versions: the test oracles live in the
// `tidemark-testkit` crate (`tidemark_testkit::model`), which compiles this same source.
#[doc(hidden)]
#[deprecated(note = "use the tidemark-testkit crate: tidemark_testkit::model")]
#[path = "../../testkit/src/model.rs"]
pub mod model;
mod offset;
mod tracker;

pub use offset::Offset;
pub use tracker::{
    DownClass, Event, EvictReason, Pinning, SweepOutcome, Tracker, TrackerError, TrackerOptions,
    TrackerStats, WorkStats, WriterId, WriterStatus,
};
