#!/usr/bin/env bash
# The ABI benchmark (docs/BENCHMARKS.md, "C ABI"): the C program measuring calls from C, then
# the criterion group comparing each direct Rust call with its extern "C" export in one run.
# Pass --quick to only check that both still build and run.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --locked -p tidemark-ffi
gcc -std=c11 -O2 -Wall -Wextra -Wpedantic -Werror -Iinclude -Iinclude/tests \
  include/tests/abi_bench.c "$target/release/libtidemark.a" \
  -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc -o "$target/abi_bench"
echo "== from C (gcc -O2, libtidemark.a)"
"$target/abi_bench"
echo "== criterion: direct Rust call vs its extern \"C\" export"
if [[ "${1:-}" == --quick ]]; then
  cargo bench --locked -p tidemark-benches --bench abi -- --test
else
  cargo bench --locked -p tidemark-benches --bench abi
fi
