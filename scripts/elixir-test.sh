#!/usr/bin/env bash
# The Elixir binding's checks: builds the static library, runs the ExUnit suite of
# bindings/elixir (no Hex: the project has no dependencies; its NIF is built by `make` through a
# Mix compiler), then short benchmark smokes so bench/tracker.exs and bench/batch.exs keep
# working.
# Exits non-zero on any failure and ends with "elixir: N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

export MIX_ENV=test
export CARGO_TERM_COLOR=never
# Never reach for Hex or the network.
export HEX_OFFLINE=1 MIX_OFFLINE=1

passed=0
failed=0
rc=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

finish() {
  echo "elixir: $passed passed, $failed failed"
  exit "$rc"
}

if ! command -v mix >/dev/null 2>&1; then
  echo "elixir-test: mix not found (install elixir and erlang-dev)" >&2
  rc=1 failed=1
  finish
fi

echo "==> cargo build --release --locked -p tidemark-ffi"
if ! cargo build --release --locked -p tidemark-ffi; then
  echo "elixir-test: building the static library failed" >&2
  rc=1 failed=1
  finish
fi

cd "$ROOT/bindings/elixir"
echo "==> mix test (MIX_ENV=test)"
mix test --no-deps-check 2>&1 | tee "$log"
test_rc=${PIPESTATUS[0]}

# ExUnit's summary: "23 tests, 0 failures" (optionally ", N excluded", "N doctests", ...).
summary=$(grep -E '^[0-9]+ (tests?|doctests?)(, [0-9]+ (tests?|doctests?))*, [0-9]+ failures?' "$log" | tail -1)
if [ -n "$summary" ]; then
  total=$(echo "$summary" | grep -Eo '[0-9]+ (tests?|doctests?)' | grep -Eo '^[0-9]+' | awk '{s+=$1} END {print s+0}')
  failures=$(echo "$summary" | grep -Eo '[0-9]+ failures?' | grep -Eo '^[0-9]+')
  excluded=$(echo "$summary" | grep -Eo '[0-9]+ excluded' | grep -Eo '^[0-9]+' || true)
  skipped=$(echo "$summary" | grep -Eo '[0-9]+ skipped' | grep -Eo '^[0-9]+' || true)
  passed=$((total - failures - ${excluded:-0} - ${skipped:-0}))
  failed=$failures
fi
if [ "$test_rc" -ne 0 ]; then
  rc=1
  # A crash or compile error leaves no summary (or no failing test): still count a failure.
  [ "$failed" -eq 0 ] && failed=1
fi

echo "==> mix run bench/tracker.exs --quick (MIX_ENV=dev)"
if ! MIX_ENV=dev mix run --no-deps-check bench/tracker.exs --quick; then
  echo "elixir-test: the benchmark smoke failed" >&2
  rc=1
  failed=$((failed + 1))
fi

echo "==> mix run bench/batch.exs --quick (MIX_ENV=dev)"
if ! MIX_ENV=dev mix run --no-deps-check bench/batch.exs --quick; then
  echo "elixir-test: the batch benchmark smoke failed" >&2
  rc=1
  failed=$((failed + 1))
fi

finish
