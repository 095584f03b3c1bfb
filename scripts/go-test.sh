#!/usr/bin/env bash
# Go binding checks (bindings/go): builds the static C library, then go vet, the tests under
# the race detector, the tests again with GOGC=1 (finalizers and GC pressure around every cgo
# call; the steady-state allocation test counts allocations in this run, as sync.Pool drops
# items at random under the race detector), and every benchmark once (-benchtime=100x) so they
# keep running. Each step runs even if an earlier one failed; exits non-zero if any failed;
# ends with "go: N passed, M failed",
# where N/M count the `--- PASS`/`--- FAIL` lines of the verbose test runs plus one per
# non-test step (build, vet, benchmarks) that passed or failed.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
LOG_DIR=${LOG_DIR:-target/test-logs}
mkdir -p "$LOG_DIR"
passed=0
failed=0

count_tests() { # log file: add its --- PASS / --- FAIL lines
  local p f
  p=$(grep -cE '^\s*--- PASS' "$1")
  f=$(grep -cE '^\s*--- FAIL' "$1")
  passed=$((passed + p))
  failed=$((failed + f))
}

run() { # name, kind (tests|step), command...
  local name=$1 kind=$2
  shift 2
  local log="$ROOT/$LOG_DIR/go-$name.log"
  echo "==> go $name: $*"
  (cd "$ROOT/bindings/go" && "$@") >"$log" 2>&1
  local rc=$?
  grep -E '^(--- FAIL|FAIL|ok|panic|PASS$)|DATA RACE|^\s+\S+_test.go:' "$log" | head -40
  if [ "$kind" = tests ]; then
    count_tests "$log"
    # A package that failed without a --- FAIL line (build error, panic, timeout) still fails.
    if [ $rc -ne 0 ] && ! grep -qE '^\s*--- FAIL' "$log"; then failed=$((failed + 1)); fi
  elif [ $rc -eq 0 ]; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
  fi
  [ $rc -eq 0 ] && echo "<== go $name: ok" || { echo "<== go $name: FAILED (rc $rc; log $log)"; tail -30 "$log"; }
  return $rc
}

if ! command -v go >/dev/null; then
  echo "go not found (Debian: apt-get install golang-go)"
  echo "go: 0 passed, 1 failed"
  exit 1
fi

echo "==> cargo build --release --locked -p tidemark-ffi"
if cargo build --release --locked -p tidemark-ffi >"$LOG_DIR/go-cargo.log" 2>&1; then
  passed=$((passed + 1))
else
  failed=$((failed + 1))
  tail -30 "$LOG_DIR/go-cargo.log"
  echo "go: $passed passed, $failed failed"
  exit 1
fi

run vet step go vet ./...
run race tests go test -race -count=1 -timeout 300s -v ./...
GOGC=1 run gogc1 tests go test -count=1 -timeout 300s -v ./...
run bench step go test -run '^$' -bench . -benchtime=100x -timeout 300s ./...

echo "go: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
