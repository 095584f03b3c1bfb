//! loom models of tidemark's atomic protocols live in `tests/`, one file per structure.
//! They only do something under `RUSTFLAGS="--cfg tidemark_loom"`; see `scripts/test.sh`.
