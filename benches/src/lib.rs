//! Benchmarks live in `benches/`; this library holds the in-bench baselines they share.
//!
//! - [`reference`]: Electric's FlushTracker, the reference algorithm of docs/CONTRACT.md §3, in
//!   Rust (`BTreeSet` + `HashMap`): the baseline every tracker figure is compared against.
//! - [`workload`]: the docs/CONTRACT.md §8 workload (writers drawn uniformly from `N`, 4 distinct
//!   writers per commit, each commit flushed 64 commits later) with a deterministic PRNG.
//! - [`sink`]: one interface over tidemark's [`Tracker`](tidemark::Tracker) and the reference,
//!   so the same driver loop measures both.

pub mod reference;
pub mod sink;
pub mod workload;
