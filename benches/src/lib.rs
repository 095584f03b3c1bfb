//! Benchmarks live in `benches/`; this library holds the in-bench baselines they share.
//!
//! The reference algorithm every tracker figure is compared against (Electric's FlushTracker)
//! is `tidemark_testkit::model::ElectricTracker`, the repository's one implementation of it.
//!
//! - [`workload`]: the docs/CONTRACT.md §8 workload (writers drawn uniformly from `N`, 4 distinct
//!   writers per commit, each commit flushed 64 commits later) with a deterministic PRNG.
//! - [`sink`]: one interface over tidemark's [`Tracker`](tidemark::Tracker) and the reference,
//!   so the same driver loop measures both.

pub mod sink;
pub mod workload;
