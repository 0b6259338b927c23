#!/usr/bin/env bash
# How much segment summaries save `walarch plan` (issue 16, part 4).
#
# Builds a repository on moto S3 holding a backup of an empty PostgreSQL 15 cluster and, after
# it, at least $WAL_MIB MiB of WAL (pgbench: initialisation, then TPC-B-like load), archived by
# `walarch wal-push`. Then plans to an xid committed near the end of that WAL twice: cold (no
# summaries yet: every segment from the backup's start is downloaded and decoded) and warm
# (the summaries the first plan stored are read instead). Prints seconds and WAL bytes
# downloaded for each. Every process it starts is stopped and its directory removed on exit.
#
# usage: benches/e2e/plan_cache.sh            (as root; PostgreSQL runs as `postgres`)
# env:   WALARCH_BIN   the walarch binary (default: target/release/walarch, built if missing)
#        MOTO_SERVER   moto_server (default /root/.pyenv/versions/3.11.7/bin/moto_server)
#        WAL_MIB       WAL to archive after the backup, in MiB (default 2048)
#        PGBENCH_SCALE pgbench -i scale (default 100)
#        PG_BIN        PostgreSQL 15 binaries (default /usr/lib/postgresql/15/bin)
set -euo pipefail

here=$(cd "$(dirname "$0")/../.." && pwd)
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
MOTO_SERVER=${MOTO_SERVER:-/root/.pyenv/versions/3.11.7/bin/moto_server}
WAL_MIB=${WAL_MIB:-2048}
PGBENCH_SCALE=${PGBENCH_SCALE:-100}
target_dir=${CARGO_TARGET_DIR:-$here/target}
WALARCH_BIN=${WALARCH_BIN:-$target_dir/release/walarch}
if [ ! -x "$WALARCH_BIN" ]; then
  (cd "$here" && cargo build --release -p walarch-cli)
fi

work=$(mktemp -d /tmp/walarch-bench-plan-cache.XXXXXX)
chmod 755 "$work"; chown postgres "$work"
moto_pid=
cleanup() {
  if [ -f "$work/data/postmaster.pid" ]; then
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
  fi
  if [ -n "$moto_pid" ]; then kill "$moto_pid" 2>/dev/null || true; wait "$moto_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
pg_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$MOTO_SERVER" -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 &
moto_pid=$!
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port" && break; sleep 0.2; done
curl -sf -X PUT "http://127.0.0.1:$port/bench" >/dev/null

install -m 755 "$WALARCH_BIN" "$work/walarch"
repo=s3://bench/plan-cache
cat >"$work/env" <<EOF
AWS_ACCESS_KEY_ID=bench
AWS_SECRET_ACCESS_KEY=bench-secret
AWS_REGION=us-east-1
WALARCH_S3_ENDPOINT=http://127.0.0.1:$port
WALARCH_S3_ALLOW_HTTP=true
EOF
chmod 644 "$work/env"
as_pg() { runuser -u postgres -- env $(cat "$work/env") "$@"; }
walarch() { as_pg "$work/walarch" --repo "$repo" "$@"; }
psql_() { runuser -u postgres -- "$PG_BIN/psql" -h "$work" -p "$pg_port" -d postgres -Atqc "$1"; }

mkdir "$work/data"; chown postgres "$work/data"
runuser -u postgres -- "$PG_BIN/initdb" -D "$work/data" --no-instructions >/dev/null 2>&1
cat >>"$work/data/postgresql.conf" <<EOF
port = $pg_port
listen_addresses = ''
unix_socket_directories = '$work'
archive_mode = on
archive_command = 'env $(tr '\n' ' ' <"$work/env") $work/walarch --repo $repo wal-push %p'
max_wal_size = 4GB
checkpoint_timeout = 30min
autovacuum = off
EOF
runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$work/data" -l "$work/pg.log" -w start >/dev/null
walarch --json backup --pgdata "$work/data" --dbname "host=$work port=$pg_port dbname=postgres" >/dev/null
start_lsn=$(psql_ "select pg_current_wal_lsn()")

echo "pgbench: initialising (scale $PGBENCH_SCALE), then load until $WAL_MIB MiB of WAL follow the backup" >&2
runuser -u postgres -- "$PG_BIN/pgbench" -h "$work" -p "$pg_port" -i -s "$PGBENCH_SCALE" -q postgres >/dev/null 2>&1
wal_since() { psql_ "select pg_wal_lsn_diff(pg_current_wal_lsn(), '$start_lsn')::bigint"; }
while [ "$(wal_since)" -lt $((WAL_MIB * 1024 * 1024)) ]; do
  runuser -u postgres -- "$PG_BIN/pgbench" -h "$work" -p "$pg_port" -c 4 -j 2 -T 20 -n postgres >/dev/null 2>&1
done
psql_ "create table marker (note text)"
xid=$(psql_ "insert into marker values ('the target') returning txid_current()")
runuser -u postgres -- "$PG_BIN/pgbench" -h "$work" -p "$pg_port" -c 4 -j 2 -t 2000 -n postgres >/dev/null 2>&1
last=$(psql_ "select pg_walfile_name(pg_switch_wal())")
echo "waiting for $last to be archived" >&2
until [ "$(psql_ "select coalesce(last_archived_wal >= '$last', false) from pg_stat_archiver")" = t ]; do
  sleep 1
done
wal_bytes=$(wal_since)
runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$work/data" -m fast -w stop >/dev/null

run_plan() {
  local t0 t1 out
  t0=$(date +%s.%N)
  out=$(walarch --json plan --target-xid "$xid")
  t1=$(date +%s.%N)
  python3 - "$1" "$t0" "$t1" "$out" <<'EOF'
import json, sys
label, t0, t1, out = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), json.loads(sys.argv[4])
print(f"{label:5} {t1 - t0:7.2f} s  WAL downloaded {out['wal_bytes_downloaded'] / 2**20:8.1f} MiB  "
      f"segments decoded {out['wal_segments_decoded']:4}  from summaries {out['wal_segments_from_summaries']:4} "
      f"({out['summary_bytes_read'] / 2**20:.2f} MiB read)  "
      f"(plan: {out['wal_segments']} segments, {out['wal_bytes'] / 2**20:.1f} MiB stored; stop {out['stop']['lsn']} xid {out['stop']['xid']})")
EOF
}
echo "WAL after the backup: $((wal_bytes / 1024 / 1024)) MiB; target xid $xid; repository $repo on moto S3"
run_plan cold
run_plan warm
