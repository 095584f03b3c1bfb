#!/usr/bin/env bash
# The one command that runs every check (README "Testing"; CI runs it through .ci/run).
# Each step runs even if an earlier one failed; the script exits non-zero if any failed, and
# ends with a "tests: N passed, N failed" line summing every cargo test harness run.
set -uo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR=never
export RUST_BACKTRACE=1
LOG_DIR=${LOG_DIR:-target/test-logs}
mkdir -p "$LOG_DIR"

failed_steps=()
passed_steps=0
total_passed=0
total_failed=0

step() {
  local name=$1
  shift
  local log="$LOG_DIR/$name.log"
  local start=$SECONDS
  echo "==> $name: $*"
  "$@" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  # Sum the harness summaries ("test result: ok. 12 passed; 0 failed; ...").
  local p f
  p=$(grep -Eo 'test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
  f=$(grep -Eo 'test result: [a-zA-Z]+\. [0-9]+ passed; [0-9]+ failed' "$log" | grep -Eo '[0-9]+ failed' | awk '{s+=$1} END {print s+0}')
  total_passed=$((total_passed + p))
  total_failed=$((total_failed + f))
  if [ "$rc" -eq 0 ]; then
    passed_steps=$((passed_steps + 1))
    echo "<== $name: ok ($((SECONDS - start)) s)"
  else
    failed_steps+=("$name")
    echo "<== $name: FAILED with status $rc ($((SECONDS - start)) s)"
  fi
}

step fmt cargo fmt --all -- --check
step clippy cargo clippy --workspace --all-targets --locked -- -D warnings
# The loom build uses its own target dir so it does not invalidate the normal one.
step clippy-loom env RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
  cargo clippy -p tidemark -p loom-tests --tests --locked -- -D warnings
step test cargo test --workspace --locked
# loom: bounded preemptions (STYLE.md habit 2), release with debug assertions.
step loom env RUSTFLAGS="--cfg loom -C debug-assertions" CARGO_TARGET_DIR=target/loom \
  LOOM_MAX_PREEMPTIONS=3 cargo test -p loom-tests --release --locked
# Benchmarks in test mode: each benchmark runs once, so they keep compiling and running.
step bench-test cargo bench -p tidemark-benches --locked -- --test

echo
echo "steps: $passed_steps ok, ${#failed_steps[@]} failed${failed_steps[*]:+ (${failed_steps[*]})}"
if [ "${#failed_steps[@]}" -gt 0 ] && [ "$total_failed" -eq 0 ]; then
  # A step failed without a failing test (a lint, a build error): still count it.
  total_failed=${#failed_steps[@]}
fi
echo "tests: $total_passed passed, $total_failed failed"
[ "${#failed_steps[@]}" -eq 0 ]
