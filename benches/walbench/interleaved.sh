#!/usr/bin/env bash
# Issue 17's comparison in one invocation, interleaved so that drift on the machine (10-20 %
# over a few minutes on these VMs) hits every tool alike (run as root):
#
#   benches/walbench/interleaved.sh [ROUNDS]        # default 5 rounds
#   WALARCH=/path/to/walarch benches/walbench/interleaved.sh 5   # a given build
#   WALARCH_BEFORE=/path/to/old/walarch benches/walbench/interleaved.sh 5
#       # also runs that earlier build in every round (tools walarch-before, walarch-s3-before),
#       # so that a change is measured before and after under the same drift
#   RESTORE_FLOOR=1 ...   # recovery also with every segment pre-staged and renamed in (mv-staged),
#                         # and the same with 1 GiB written evenly beside it (mv-staged-io)
#
# Each round runs, one after the other:
#   A2 backlog drain (~1 GiB of pgbench WAL queued, then drained; only the drain is timed) for
#      walarch and pgBackRest async (zst, process-max 2), into a local repository and into S3
#      (s3s-fs on 127.0.0.1),
#   B  recovery replaying an archive of the same workload with walarch's and cp's
#      restore_command (each archived by its own tool in the same round),
# and writes results/interleaved-<time>/{archive_backlog,archive,restore}.tsv and summary.md:
# medians with min-max, and the ratios the issue's goals are stated in (per round and median).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
ROUNDS=${1:-5}
export RESULTS=${RESULTS:-$HERE/results/interleaved-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$RESULTS"

if [ -z "${WALARCH:-}" ]; then
  (cd "$ROOT" && cargo build --release --locked -p walarch-cli)
  WALARCH=$ROOT/target/release/walarch
fi
install -D -m 0755 "$WALARCH" /var/tmp/walbench-bin/walarch
"$WALARCH" --version > "$RESULTS/walarch-version.txt" 2>&1 || true
export WALARCH_BIN=/var/tmp/walbench-bin/walarch
BEFORE_DRAIN="" BEFORE_RECOVERY=""
if [ -n "${WALARCH_BEFORE:-}" ]; then
  install -D -m 0755 "$WALARCH_BEFORE" /var/tmp/walbench-bin/walarch-before
  export WALARCH_BEFORE_BIN=/var/tmp/walbench-bin/walarch-before
  BEFORE_DRAIN=" walarch-before walarch-s3-before" BEFORE_RECOVERY=" walarch-before"
fi

"$HERE/setup.sh"
"$HERE/s3.sh" start s3s
trap '"$HERE/s3.sh" stop' EXIT

DRAIN_TOOLS=${DRAIN_TOOLS-"walarch pgbr-async-zst walarch-s3 pgbr-s3-async-zst$BEFORE_DRAIN"}
RECOVERY_TOOLS=${RECOVERY_TOOLS-"walarch cp$BEFORE_RECOVERY"}
# Each round starts one tool further along its list, so that drift within a round (the machine
# speeding up or slowing down over a few minutes) does not always fall on the same tool.
rotate() { local n=$1; shift; local tools=("$@"); local k=$(( n % ${#tools[@]} ));
  echo "${tools[@]:k}" "${tools[@]:0:k}"; }
for round in $(seq 1 "$ROUNDS"); do
  echo "== round $round of $ROUNDS" >&2
  # shellcheck disable=SC2086
  for tool in $( [ -n "$DRAIN_TOOLS" ] && rotate $((round - 1)) $DRAIN_TOOLS ); do
    "$HERE/run_backlog.sh" "$tool" 1
  done
  # shellcheck disable=SC2086
  for tool in $( [ -n "$RECOVERY_TOOLS" ] && rotate $((round - 1)) $RECOVERY_TOOLS ); do
    KEEP=1 "$HERE/run_archive.sh" "$tool" 1
    "$HERE/run_restore.sh" "$tool" 1
    # RESTORE_FLOOR=1: also recover from cp's archive with every segment staged beforehand and
    # only renamed into place (tool mv-staged): the floor of any restore_command; and the same
    # with 1 GiB written evenly through pg_wal's file system meanwhile (tool mv-staged-io): what
    # writing the WAL beside replay costs.
    if [ "$tool" = cp ] && [ -n "${RESTORE_FLOOR:-}" ]; then
      RESTORE_AS=mv-staged "$HERE/run_restore.sh" cp 1
      RESTORE_AS=mv-staged-io "$HERE/run_restore.sh" cp 1
    fi
  done
done
"$HERE/interleaved_summary.py" "$RESULTS" | tee "$RESULTS/summary.md"
