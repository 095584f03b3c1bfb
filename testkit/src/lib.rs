//! Test oracles for tidemark, kept out of the library: small sequential models that the fast
//! code is cross-checked against (docs/CONTRIBUTING.md habit 10), and the baseline algorithm the
//! benchmarks compare with. Used by the property tests, the fuzz targets, the benchmarks and the
//! CLI's `pg` comparison; not published.
//!
//! - [`model::ExactModel`]: the tracker's contract (docs/CONTRACT.md §3–§4) written the obvious
//!   way, with the same method names, ids and errors as [`tidemark::Tracker`].
//! - [`model::ElectricTracker`]: Electric's FlushTracker algorithm, the one implementation of it
//!   in the repository (the "never below" baseline of the property tests, the benchmarks'
//!   reference tracker, the `pg` run's comparison tracker).
//! - [`batch::ReferenceBatcher`]: the batch buffer's decisions, recomputed from plain vectors.
//!
//! All are slow on purpose and single-threaded.

pub mod batch;
pub mod model;
