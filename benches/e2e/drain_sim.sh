#!/usr/bin/env bash
# PostgreSQL's archiver imitated, to profile a backlog drain without a server (perf, strace):
# 63 segments of SEGMENT_DIR queued as .ready in a fake data directory, then archived one call
# at a time in name order, each .ready renamed to .done after success, as the archiver does.
# usage: drain_sim.sh WALARCH_BIN REPO_URL SEGMENT_DIR
#   SETUP_ONLY=1 prepares the queue and exits; RUN_ONLY=1 drains a prepared queue (so that
#   `RUN_ONLY=1 perf record -g -- drain_sim.sh ...` sees the drain alone).
# Prints the drain's wall time; waits for the push worker to exit before returning.
set -euo pipefail
W=${1:?usage: drain_sim.sh WALARCH_BIN REPO_URL SEGMENT_DIR}; REPO=${2:?}; SRC=${3:?}
D=${DRAIN_DIR:-/tmp/walarch-drain-sim}/data
if [ -z "${RUN_ONLY:-}" ]; then
  rm -rf "$(dirname "$D")"; mkdir -p "$D/pg_wal/archive_status"
  echo 15 > "$D/PG_VERSION"
  for f in $(ls "$SRC" | grep -E '^[0-9A-F]{24}$' | sed -n '3,65p'); do
    cp "$SRC/$f" "$D/pg_wal/"; touch "$D/pg_wal/archive_status/$f.ready"
  done
  sync; sleep 1
fi
[ -n "${SETUP_ONLY:-}" ] && exit 0
cd "$D"
t0=$(date +%s.%N)
for r in $(ls pg_wal/archive_status | grep '\.ready$' | sed 's/\.ready$//' | sort); do
  until WALARCH_REPO=$REPO "$W" wal-push "pg_wal/$r"; do sleep 0.1; done
  mv "pg_wal/archive_status/$r.ready" "pg_wal/archive_status/$r.done"
done
t1=$(date +%s.%N)
echo "drain $(echo "$t1 - $t0" | bc) s"
sleep 2.5   # the push worker exits 2 s after the last call
