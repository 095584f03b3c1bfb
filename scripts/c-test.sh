#!/usr/bin/env bash
# The C side of the ABI: builds libtidemark.a, compiles every test in include/tests/ as plain
# C11 with -Wall -Wextra -Wpedantic -Werror under ASan + UBSan, runs them, runs two of them
# under valgrind memcheck (zero leaks required), and checks the header compiles as C++.
# Prints `c: N passed, M failed` last (N, M count test programs and checks, not assertions).
# Called by scripts/test.sh; runnable alone.
set -uo pipefail
cd "$(dirname "$0")/.."

target="${CARGO_TARGET_DIR:-target}"
cargo build --release --locked -p tidemark-ffi || exit 1
lib="$target/release/libtidemark.a"
out="$target/c-tests"
mkdir -p "$out"
# What the Rust standard library needs when linked statically (`--print native-static-libs`).
libs=(-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc)
cflags=(-std=c11 -Wall -Wextra -Wpedantic -Werror -g -Iinclude -Iinclude/tests)

passed=0
failed=0
fail() { echo "FAILED: $*"; failed=$((failed + 1)); }

count() { # one test program: passed when its `name: N passed, 0 failed` line says so
  local line
  line=$(grep -E '^[a-z_]+: [0-9]+ passed, [0-9]+ failed$' "$1" | tail -1)
  if [[ -z "$line" ]]; then fail "$2 printed no summary"; return; fi
  # The line counts assertions; the totals count programs.
  if [[ "$line" == *" 0 failed" ]]; then passed=$((passed + 1)); else fail "$2: $line"; fi
}

tests=(tracker_test batch_test errors_test threads_test)
for t in "${tests[@]}"; do
  if ! gcc "${cflags[@]}" -fsanitize=address,undefined -fno-sanitize-recover=all \
      -fno-omit-frame-pointer "include/tests/$t.c" "$lib" "${libs[@]}" -o "$out/$t-asan"; then
    fail "$t does not compile"
    continue
  fi
  if ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
      timeout 600 "$out/$t-asan" >"$out/$t.log" 2>&1; then
    count "$out/$t.log" "$t"
  else
    cat "$out/$t.log"
    fail "$t (ASan/UBSan) exited non-zero"
  fi
  tail -1 "$out/$t.log"
done

# valgrind memcheck on an uninstrumented build: no errors, no definite or indirect leaks.
if command -v valgrind >/dev/null; then
  for t in tracker_test batch_test; do
    gcc "${cflags[@]}" "include/tests/$t.c" "$lib" "${libs[@]}" -o "$out/$t-plain" || {
      fail "$t (plain) does not compile"; continue; }
    if valgrind --quiet --error-exitcode=99 --leak-check=full \
        --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect \
        "$out/$t-plain" >"$out/$t-valgrind.log" 2>&1; then
      passed=$((passed + 1))
      echo "valgrind $t: no errors, no leaks"
    else
      cat "$out/$t-valgrind.log"
      fail "valgrind $t"
    fi
  done
else
  fail "valgrind is not installed (apt-get install valgrind)"
fi

# The C benchmark keeps compiling and running (figures: scripts/abi-bench.sh).
if gcc "${cflags[@]}" -O2 include/tests/abi_bench.c "$lib" "${libs[@]}" -o "$out/abi_bench" &&
    "$out/abi_bench" >"$out/abi_bench.log" 2>&1; then
  passed=$((passed + 1))
  echo "abi_bench: ran"
else
  cat "$out/abi_bench.log" 2>/dev/null
  fail "abi_bench"
fi

# C++ hosts can include the header.
for std in c++11 c++17; do
  if g++ -std=$std -Wall -Wextra -Wpedantic -Werror -fsyntax-only -x c++ include/tidemark.h; then
    passed=$((passed + 1))
  else
    fail "g++ -std=$std cannot parse include/tidemark.h"
  fi
done

echo "c: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
