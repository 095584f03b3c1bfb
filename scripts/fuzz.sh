#!/usr/bin/env bash
# Fuzzing (a step of scripts/test.sh): runs every cargo-fuzz target in fuzz/ for a bounded time
# on the nightly toolchain, with AddressSanitizer (cargo-fuzz's default) and libFuzzer's leak
# check. Seeds come from fuzz/corpus/<target>/ (committed, read-only here); what a run
# discovers goes to a scratch corpus under the target dir, so the tree stays clean.
#
#   FUZZ_SECONDS   seconds per target at most (default 60)
#   FUZZ_BUDGET    seconds for the whole step, build included (default 285): when a cold
#                  build eats into it, each target gets an equal share of what is left
#                  (at least 20 s), so the step stays under 5 minutes
#   FUZZ_TARGETS   space-separated targets (default: every target in fuzz/Cargo.toml)
#   FUZZ_JOBS      build jobs (default 2)
#   CARGO_TARGET_DIR  build directory (default target/fuzz)
#
# Prints the executions of each target and ends with "fuzz: N passed, M failed" (targets).
# A crash leaves its input in $CARGO_TARGET_DIR/artifacts/<target>/ and the command to
# reproduce it. Without nightly or cargo-fuzz it prints SKIPPED and exits 0.
set -uo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
FUZZ_BUDGET=${FUZZ_BUDGET:-285}
FUZZ_JOBS=${FUZZ_JOBS:-2}
TARGET_DIR=${CARGO_TARGET_DIR:-target/fuzz}
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$PWD/$TARGET_DIR" ;; esac

skip() {
  echo "SKIPPED: $1"
  echo "fuzz: 0 passed, 0 failed"
  exit 0
}

if ! cargo +nightly --version >/dev/null 2>&1; then
  rustup toolchain install nightly --profile minimal >/dev/null 2>&1 ||
    skip "the nightly toolchain is not installed and cannot be installed"
fi
if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
  echo "installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked ||
    skip "cargo-fuzz $CARGO_FUZZ_VERSION cannot be installed"
fi

targets=${FUZZ_TARGETS:-$(cd fuzz && cargo +nightly fuzz list)}
echo "building fuzz targets: $targets"
start=$SECONDS
if ! (cd fuzz && CARGO_BUILD_JOBS=$FUZZ_JOBS cargo +nightly fuzz build -O --target-dir "$TARGET_DIR"); then
  echo "fuzz build failed"
  echo "fuzz: 0 passed, 1 failed"
  exit 1
fi
echo "built in $((SECONDS - start)) s"
ntargets=$(wc -w <<<"$targets")
# Each target's run costs ~2 s beyond its time limit (start-up, seed replay, final stats).
share=$(((FUZZ_BUDGET - (SECONDS - start)) / ntargets - 2))
[ "$share" -lt 20 ] && share=20
seconds=$FUZZ_SECONDS
[ "$share" -lt "$seconds" ] && seconds=$share

passed=0
failed=0
failed_names=()
for t in $targets; do
  scratch="$TARGET_DIR/corpus/$t"
  artifacts="$TARGET_DIR/artifacts/$t"
  mkdir -p "$scratch" "$artifacts"
  log="$TARGET_DIR/$t.log"
  echo "==> fuzz $t for $seconds s"
  t0=$SECONDS
  # The first corpus dir receives new inputs; the committed seeds are only read.
  (cd fuzz && cargo +nightly fuzz run -O --target-dir "$TARGET_DIR" "$t" "$scratch" "corpus/$t" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$artifacts/") >"$log" 2>&1
  rc=$?
  execs=$(grep -Eo '^stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' | tail -1)
  [ -n "$execs" ] || execs=$(grep -Eo '^Done [0-9]+ runs' "$log" | grep -Eo '[0-9]+' | tail -1)
  if [ "$rc" -eq 0 ]; then
    passed=$((passed + 1))
    echo "<== fuzz $t: ok, ${execs:-?} executions in $((SECONDS - t0)) s"
  else
    failed=$((failed + 1))
    failed_names+=("$t")
    tail -n 60 "$log"
    echo "<== fuzz $t: FAILED after ${execs:-?} executions ($((SECONDS - t0)) s); input in $artifacts/"
    for a in "$artifacts"/*; do
      [ -e "$a" ] && echo "    reproduce: (cd fuzz && cargo +nightly fuzz run -O $t $a)"
    done
  fi
done
[ "${#failed_names[@]}" -eq 0 ] || echo "failed targets: ${failed_names[*]}"
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
