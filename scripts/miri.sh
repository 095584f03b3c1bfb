#!/usr/bin/env bash
# miri (a step of scripts/test.sh): the tests that exercise unsafe code, interpreted by miri on
# the nightly toolchain, on several scheduler/address seeds:
#   - the batch ring (core/src/batch/ring.rs unit tests; core/tests/miri_batch.rs: laps and
#     wrap-around of tiny rings, requeues, stop and drop with messages in the ring, three
#     producers on a two-slot ring);
#   - the segmented writer table and the chunked delivery log (seg.rs, log.rs unit tests;
#     core/tests/miri_tracker.rs: growth across segments, chunk recycling, a committer racing
#     two flushers);
#   - the C ABI's checks (ffi/tests/miri_abi.rs: NULL / misaligned / wrong-type handles, zero
#     and huge lengths, bad flag bytes, huge timeouts).
# Sizes shrink under cfg(miri) in those files only. Ends with "miri: N passed, M failed"
# (test cases, summed over seeds). Without the miri / rust-src components it prints SKIPPED.
#
#   MIRI_SEEDS        seeds to run (default "0 1 2")
#   CARGO_TARGET_DIR  build directory (default target/miri)
set -uo pipefail
cd "$(dirname "$0")/.."

MIRI_SEEDS=${MIRI_SEEDS:-0 1 2}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/miri}
export CARGO_TERM_COLOR=never

skip() {
  echo "SKIPPED: $1"
  echo "miri: 0 passed, 0 failed"
  exit 0
}

cargo +nightly --version >/dev/null 2>&1 || skip "no nightly toolchain"
installed=$(rustup +nightly component list --installed 2>/dev/null)
if ! grep -q '^miri' <<<"$installed" || ! grep -q '^rust-src' <<<"$installed"; then
  echo "installing the miri and rust-src components"
  rustup component add miri rust-src --toolchain nightly ||
    skip "the miri / rust-src components cannot be installed"
fi
cargo +nightly miri setup >/dev/null 2>&1 || skip "cargo miri setup failed"

# Each run: a package, its test targets, and a name filter. The single-threaded suites run on
# the first seed; the files with threads (whose interleavings the seed picks) on every seed.
first_seed=${MIRI_SEEDS%% *}
once=(
  "-p tidemark --lib -- batch::ring:: tracker::seg:: tracker::log::"
  "-p tidemark-ffi --test miri_abi"
)
seeded=(
  "-p tidemark --test miri_batch"
  "-p tidemark --test miri_tracker"
)

passed=0
failed=0
log=$(mktemp)
for seed in $MIRI_SEEDS; do
  runs=("${seeded[@]}")
  [ "$seed" = "$first_seed" ] && runs+=("${once[@]}")
  for run in "${runs[@]}"; do
    echo "==> miri (seed $seed): cargo +nightly miri test $run"
    # -Zmiri-strict-provenance: integer-to-pointer casts are errors (the cast module's checks
    # read addresses, never make pointers from integers).
    # shellcheck disable=SC2086
    MIRIFLAGS="-Zmiri-seed=$seed -Zmiri-strict-provenance" \
      cargo +nightly miri test --locked $run 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    p=$(grep -Eo 'test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
    f=$(grep -Eo '[0-9]+ passed; [0-9]+ failed' "$log" | grep -Eo '[0-9]+ failed' | awk '{s+=$1} END {print s+0}')
    # A run that stopped on undefined behaviour prints no summary: count it as a failure.
    [ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && f=1
    passed=$((passed + p))
    failed=$((failed + f))
  done
done
rm -f "$log"
echo "miri: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
