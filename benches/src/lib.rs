//! Benchmarks live in `benches/`; this library holds the in-bench baselines they share.
