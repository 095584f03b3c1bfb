#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for `tidemark pg` (docs/PG.md):
#
#   scripts/pg.sh start    # prints PGURL=postgresql://postgres@127.0.0.1:PORT/postgres
#   scripts/pg.sh stop     # stops it and deletes its data directory
#   scripts/pg.sh status   # exit 0 when it runs (and prints PGURL=...)
#
# Debian's `postgresql` is installed when no server binaries are found. initdb and pg_ctl run
# as the `postgres` user when this runs as root (initdb refuses root). The data directory lives
# under a temp dir, the server listens on 127.0.0.1 only, on a private port (TIDEMARK_PG_PORT,
# default 54329), with wal_level=logical and trust authentication for loopback connections.
# Everything is thrown away by `stop`, so no replication slot outlives the cluster.
set -euo pipefail

PORT=${TIDEMARK_PG_PORT:-54329}
BASE=${TIDEMARK_PG_DIR:-${TMPDIR:-/tmp}/tidemark-pg-$PORT}
DATA=$BASE/data
LOG=$BASE/server.log
URL="postgresql://postgres@127.0.0.1:$PORT/postgres"

die() {
  echo "pg.sh: $*" >&2
  exit 1
}

# The newest installed server's bin directory, if any.
find_bin() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then
      echo "$d"
      return 0
    fi
  done
  if command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then
    dirname "$(command -v initdb)"
    return 0
  fi
  return 1
}

install_server() {
  local sudo=
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  echo "pg.sh: installing Debian's postgresql" >&2
  # The package's own cluster (port 5432) is not needed; keep it from starting when we can.
  $sudo apt-get update -qq >&2 &&
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >&2
}

# Runs a server binary as the cluster owner.
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

running() {
  [ -f "$DATA/postmaster.pid" ] && as_owner "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1
}

start() {
  if running; then
    echo "PGURL=$URL"
    return 0
  fi
  rm -rf "$BASE"
  mkdir -p "$BASE"
  if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || die "no postgres user (is the postgresql package installed?)"
    chown postgres: "$BASE"
    chmod 700 "$BASE"
    # The owner must be able to reach the directory: every parent must be searchable.
    local p=$BASE
    while [ "$p" != / ]; do
      p=$(dirname "$p")
      [ -x "$p" ] || die "$p is not searchable by postgres"
    done
  fi
  as_owner "$BIN/initdb" -D "$DATA" -U postgres --auth=trust --encoding=UTF8 --no-locale \
    --no-sync >"$BASE/initdb.log" 2>&1 || {
    cat "$BASE/initdb.log" >&2
    die "initdb failed"
  }
  cat >>"$DATA/postgresql.conf" <<EOF
# tidemark pg (scripts/pg.sh): loopback only, private port, logical decoding.
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$BASE'
wal_level = logical
max_wal_senders = 10
max_replication_slots = 10
wal_sender_timeout = 60s
fsync = off
full_page_writes = off
shared_buffers = 128MB
max_wal_size = 1GB
checkpoint_timeout = 30min
log_min_messages = warning
EOF
  cat >"$DATA/pg_hba.conf" <<EOF
local all         all                trust
host  all         all  127.0.0.1/32  trust
host  replication all  127.0.0.1/32  trust
EOF
  as_owner "$BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 30 start >/dev/null || {
    cat "$LOG" >&2 || true
    die "the server did not start"
  }
  echo "PGURL=$URL"
}

stop() {
  if [ -d "$DATA" ]; then
    if running; then
      as_owner "$BIN/pg_ctl" -D "$DATA" -m fast -w -t 30 stop >/dev/null || true
    fi
  fi
  rm -rf "$BASE"
}

cmd=${1:-}
case "$cmd" in
  start)
    BIN=$(find_bin) || { install_server && BIN=$(find_bin); } || die "no PostgreSQL server binaries"
    start
    ;;
  stop)
    BIN=$(find_bin) || { rm -rf "$BASE"; exit 0; }
    stop
    ;;
  status)
    BIN=$(find_bin) || exit 1
    running || exit 1
    echo "PGURL=$URL"
    ;;
  *)
    echo "usage: scripts/pg.sh start|stop|status" >&2
    exit 2
    ;;
esac
