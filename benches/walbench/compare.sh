#!/usr/bin/env bash
# Issue 3's end-to-end comparison in one command (run as root; about 40 minutes with 3 runs):
#
#   benches/walbench/compare.sh [RUNS]
#
# Builds walarch (release), installs the anchors (setup.sh: pgBackRest, barman-cloud, s3s-fs),
# starts the S3 server on 127.0.0.1, then on a real PostgreSQL 15 with ~1 GiB of pgbench WAL runs
#   A2  backlog drain (archiving paused during the workload, then resumed; tool alone)
#   A   live archiving during the workload (KEEP=1 keeps each tool's archive for B)
#   B   recovery replaying that WAL from the archive (cp restore_command as the floor)
# for walarch, pgBackRest (sync and async process-max=2, zst), barman-cloud (S3), cp and
# /bin/true, into a local repository and into S3, and prints the summary tables
# (medians with min-max; results/summary.md). Choose tools with A2_TOOLS / AB_TOOLS.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
RUNS=${1:-3}
export RESULTS=${RESULTS:-$HERE/results}
mkdir -p "$RESULTS"

(cd "$ROOT" && cargo build --release --locked -p walarch-cli)
# Somewhere the postgres OS user can execute it.
install -D -m 0755 "$ROOT/target/release/walarch" /var/tmp/walbench-bin/walarch
export WALARCH_BIN=/var/tmp/walbench-bin/walarch

"$HERE/setup.sh"
"$HERE/s3.sh" start s3s
trap '"$HERE/s3.sh" stop' EXIT

A2_TOOLS=${A2_TOOLS:-"walarch pgbr-async-zst pgbr-sync-zst cp true walarch-s3 pgbr-s3-async-zst barman-s3-zstd"}
AB_TOOLS=${AB_TOOLS:-"walarch pgbr-async-zst cp walarch-s3 pgbr-s3-async-zst"}
for tool in $A2_TOOLS; do "$HERE/run_backlog.sh" "$tool" "$RUNS"; done
for tool in $AB_TOOLS; do
  KEEP=1 "$HERE/run_archive.sh" "$tool" "$RUNS"
  "$HERE/run_restore.sh" "$tool" "$RUNS"
done
"$HERE/summarize.py" "$RESULTS" | tee "$RESULTS/summary.md"
