#!/usr/bin/env bash
# `tidemark pg` against a real PostgreSQL (docs/PG.md, "Checks"): starts a throwaway cluster
# (scripts/pg.sh, on its own port and data directory), runs a 20 s `tidemark pg` with one kill
# and one wedge and checks its report, then a short `--tracker electric` run with one kill (the
# baseline: safe, but the killed writer pins the slot), and stops the cluster, also when a run
# fails. Ends with a line `pg: N passed, M failed`.
#
# When PostgreSQL cannot be installed or started, it prints `SKIPPED: <reason>` and
# `pg: 0 passed, 0 failed` and exits 0.
set -uo pipefail
cd "$(dirname "$0")/.."

# Not the port of a cluster a developer may keep running with `scripts/pg.sh start`.
export TIDEMARK_PG_PORT=${TIDEMARK_PG_TEST_PORT:-54339}
export TIDEMARK_PG_DIR=${TMPDIR:-/tmp}/tidemark-pg-test-$TIDEMARK_PG_PORT
out=$(mktemp -d "${TMPDIR:-/tmp}/tidemark-pg-test.XXXXXX")
passed=0
failed=0

cleanup() {
  scripts/pg.sh stop >/dev/null 2>&1 || true
  rm -rf "$out"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ok() {
  passed=$((passed + 1))
  echo "ok: $*"
}
fail() {
  failed=$((failed + 1))
  echo "FAILED: $*"
}
# check NAME FILE REGEX: the report FILE has a line matching REGEX.
check() {
  if grep -Eq -- "$3" "$2"; then ok "$1"; else fail "$1"; fi
}

if ! start=$(scripts/pg.sh start 2>"$out/start.err"); then
  echo "SKIPPED: PostgreSQL could not be installed or started: $(tail -n 1 "$out/start.err")"
  echo "pg: 0 passed, 0 failed"
  exit 0
fi
url=$(sed -n 's/^PGURL=//p' <<<"$start")
echo "cluster: $url"

if cargo build --release --locked -p tidemark-cli; then
  ok "release build"
else
  fail "release build"
  echo "pg: $passed passed, $failed failed"
  exit 1
fi
bin=${CARGO_TARGET_DIR:-target}/release/tidemark

# 1. tidemark: one kill, one wedge, 20 s. Every check of the report must pass.
t=$out/tidemark.txt
"$bin" pg --url "$url" --duration 20s --faults kill,wedge --seed 1 --no-progress \
  --chart "$out/tidemark.svg" >"$t" 2>&1
rc=$?
cat "$t"
if [ "$rc" -eq 0 ]; then ok "tidemark run exits 0"; else fail "tidemark run exits 0 (status $rc)"; fi
check "tidemark report PASSED" "$t" '^PASSED$'
if grep -q '\[FAIL\]' "$t"; then fail "tidemark report has no failed check"; else ok "tidemark report has no failed check"; fi
check "kill evicted orphaned within G + P, WAL back in time" "$t" '^  kill .*evicted orphaned .* ok$'
check "wedge evicted stalled within G + 2P, WAL back in time" "$t" '^  wedge .*evicted stalled .* ok$'
check "slot never confirmed past an unstored change" "$t" '^  \[ok\] slot never confirmed past'
check "confirmed changes are in every non-evicted writer's store" "$t" '^  \[ok\] changes below the final confirmed LSN'
check "no change lost for live writers" "$t" '^  \[ok\] no change lost for live writers'
check "retained WAL back below the threshold after each fault" "$t" '^  \[ok\] retained WAL back below'
check "after the graceful stop the slot is confirmed at the last commit" "$t" '^  \[ok\] after the graceful stop'
if grep -q '<svg' "$out/tidemark.svg" 2>/dev/null && grep -q '<polyline' "$out/tidemark.svg"; then
  ok "chart written"
else
  fail "chart written"
fi

# 2. The slot this run created was dropped (a leftover slot retains WAL forever).
psql=$(command -v psql || ls /usr/lib/postgresql/*/bin/psql 2>/dev/null | sort -V | tail -n 1)
if [ -n "$psql" ]; then
  slots=$("$psql" "$url" -Atc "SELECT count(*) FROM pg_replication_slots" 2>&1)
  if [ "$slots" = 0 ]; then ok "slot dropped after the run"; else fail "slot dropped after the run ($slots)"; fi
fi

# 3. The baseline: Electric's algorithm keeps every safety check but never releases the killed
#    writer, so the slot stays pinned (the WAL-return check is informational there).
e=$out/electric.txt
"$bin" pg --url "$url" --tracker electric --duration 6s --faults kill@1500ms --seed 1 \
  --no-progress >"$e" 2>&1
rc=$?
cat "$e"
if [ "$rc" -eq 0 ]; then ok "electric run exits 0"; else fail "electric run exits 0 (status $rc)"; fi
check "electric never releases the killed writer" "$e" '^  kill .*NOT evicted'
check "electric: retained WAL stays above the threshold" "$e" '^  \[info\] retained WAL back below'
check "electric: slot never confirmed past an unstored change" "$e" '^  \[ok\] slot never confirmed past'

echo "pg: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
