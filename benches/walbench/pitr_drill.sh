#!/usr/bin/env bash
# One larger PITR drill, timed (run as root; cargo build --release first): pgbench -s 50, a
# backup, 2 x 30 s of pgbench around a target time, then walarch plan and walarch restore --start.
set -euo pipefail
BIN=/usr/lib/postgresql/15/bin
W=/var/tmp/pitrbench
pkill -f "$W/data" 2>/dev/null || true
runuser -u postgres -- $BIN/pg_ctl -D $W/data -m immediate stop >/dev/null 2>&1 || true
runuser -u postgres -- $BIN/pg_ctl -D $W/pitr -m immediate stop >/dev/null 2>&1 || true
rm -rf $W; mkdir -p $W; chown postgres $W
install -m 0755 "$(cd "$(dirname "$0")/../.." && pwd)/target/release/walarch" $W/walarch   # cargo build --release first
REPO=$W/repo
as_pg() { runuser -u postgres -- "$@"; }
as_pg $BIN/initdb -D $W/data -A trust -U postgres --no-instructions >/dev/null
cat >> $W/data/postgresql.conf <<CONF
listen_addresses = '127.0.0.1'
port = 25432
unix_socket_directories = '$W'
archive_mode = on
archive_command = '$W/walarch --repo $REPO wal-push %p'
max_wal_size = '4GB'
CONF
as_pg $BIN/pg_ctl -D $W/data -l $W/data.log -w start >/dev/null
psql() { as_pg $BIN/psql -h 127.0.0.1 -p 25432 -U postgres -qAtX "$@"; }
as_pg $BIN/pgbench -h 127.0.0.1 -p 25432 -U postgres -i -q -s 50 postgres 2>&1 | tail -1
as_pg $W/walarch --repo $REPO backup --dbname "host=127.0.0.1 port=25432 user=postgres"
as_pg $BIN/pgbench -h 127.0.0.1 -p 25432 -U postgres -c 2 -j 2 -T 30 postgres | grep -E "tps|processed"
sleep 1; T=$(psql -c "select now()"); sleep 1
EXPECTED=$(psql -c "select sum(abalance), count(*) from pgbench_accounts")
as_pg $BIN/pgbench -h 127.0.0.1 -p 25432 -U postgres -c 2 -j 2 -T 30 postgres | grep -E "tps|processed"
LAST=$(psql -c "select pg_walfile_name(pg_switch_wal())")
until [ "$(psql -c "select coalesce(last_archived_wal,'') >= '$LAST' from pg_stat_archiver")" = t ]; do sleep 0.2; done
as_pg $BIN/pg_ctl -D $W/data -m fast -w stop >/dev/null
as_pg $W/walarch --repo $REPO info | grep -E "^(timeline|recoverable)"
/usr/bin/time -f "plan: %e s wall, %M KiB max RSS" runuser -u postgres -- $W/walarch --repo $REPO plan --target-time "$T"
/usr/bin/time -f "restore+recovery: %e s wall, %M KiB max RSS" runuser -u postgres -- $W/walarch --repo $REPO restore --pgdata $W/pitr --target-time "$T" --target-action promote --set port=25433 --set archive_mode=off --start --pg-bin $BIN
GOT=$(as_pg $BIN/psql -h 127.0.0.1 -p 25433 -U postgres -qAtX -c "select sum(abalance), count(*) from pgbench_accounts")
echo "expected $EXPECTED got $GOT"
as_pg $BIN/pg_ctl -D $W/pitr -m fast -w stop >/dev/null
du -sh $REPO/wal $REPO/backups
