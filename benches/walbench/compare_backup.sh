#!/usr/bin/env bash
# Base backup + restore comparison (part C) in one command (run as root):
#
#   benches/walbench/compare_backup.sh [RUNS]
#
# Builds walarch (release) and installs it where the postgres OS user can run it, installs the
# anchors (setup.sh), then on a real PostgreSQL 15 cluster loaded with the pgbench workload
# (archiving every segment to both a pgBackRest repo and a walarch repo) times backup and
# restore (files back into an empty PGDATA + sync, no WAL replay), with stored bytes, client CPU
# and peak RSS:
#   * default size (SCALE=60, ~924 MiB): C_METHODS (walarch pgbackrest pgbb-tgz pgbb-plain), RUNS runs
#   * larger size (BIG_SCALE, default 170, ~2.6 GiB): BIG_METHODS (walarch pgbackrest), BIG_RUNS (1) run
# and writes results/summary_backup.md. BIG_SCALE= (empty) skips the larger size. Each cluster is
# built once and kept in $BENCH_ROOT/c (or c-sSCALE); a previous results/backup.tsv is moved to
# $BENCH_ROOT/backup.tsv.prev unless APPEND=1.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
RUNS=${1:-3}
export RESULTS=${RESULTS:-$HERE/results}
BENCH_ROOT=${BENCH_ROOT:-/var/tmp/walbench}
C_METHODS=${C_METHODS:-"walarch pgbackrest pgbb-tgz pgbb-plain"}
BIG_SCALE=${BIG_SCALE-170}
BIG_RUNS=${BIG_RUNS:-1}
BIG_METHODS=${BIG_METHODS:-"walarch pgbackrest"}
mkdir -p "$RESULTS"

(cd "$ROOT" && cargo build --release --locked -p walarch-cli)
# Somewhere the postgres OS user can execute it.
install -D -m 0755 "$ROOT/target/release/walarch" /var/tmp/walbench-bin/walarch
export WALARCH_BIN=/var/tmp/walbench-bin/walarch

"$HERE/setup.sh"

if [ -f "$RESULTS/backup.tsv" ] && [ "${APPEND:-0}" != 1 ]; then
  mkdir -p "$BENCH_ROOT"; mv "$RESULTS/backup.tsv" "$BENCH_ROOT/backup.tsv.prev"
fi
# shellcheck disable=SC2086
SCALE=60 "$HERE/run_backup.sh" "$RUNS" $C_METHODS
if [ -n "$BIG_SCALE" ]; then
  # shellcheck disable=SC2086
  SCALE=$BIG_SCALE "$HERE/run_backup.sh" "$BIG_RUNS" $BIG_METHODS
fi
SECTIONS=C "$HERE/summarize.py" "$RESULTS" | tee "$RESULTS/summary_backup.md"
