#!/usr/bin/env bash
# walarch end to end on one machine: a local PostgreSQL 15 archives its WAL through walarch
# into a local file repository; a base backup is taken; a mistake destroys data; a new server
# recovers from the backup plus the archive to the moment before the mistake and shows the
# data back; then `walarch drill` carries out the same recovery in a scratch copy, checks it
# and reports RTO and RPO. Everything runs on 127.0.0.1 and is removed at the end (KEEP=1
# keeps it).
#
# The base backup is `walarch backup` into the same repository; `walarch restore` brings it
# back with restore_command and the recovery target written for PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."

PGBIN=/usr/lib/postgresql/15/bin
DEMO=${DEMO_DIR:-/tmp/walarch-demo}
PORT_A=${PORT_A:-55501}
PORT_B=${PORT_B:-55502}

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
sql() { as_pg "$PGBIN/psql" -X -h 127.0.0.1 -p "$1" -U postgres -d postgres -Atq -v ON_ERROR_STOP=1 -c "$2"; }

WITH_MOTO=0 scripts/install-prerequisites.sh
say "building walarch (release)"
cargo build --release --locked -p walarch-cli

cleanup() {
  for d in "$DEMO/primary" "$DEMO/restored"; do
    [ -f "$d/postmaster.pid" ] && as_pg "$PGBIN/pg_ctl" -D "$d" -m fast -w stop >/dev/null 2>&1 || true
  done
  if [ "${KEEP:-0}" = 1 ]; then
    echo "kept $DEMO (servers stopped; the repository is $DEMO/repo)"
  else
    rm -rf "$DEMO"
    echo "removed $DEMO, the demo's servers and repository (run with KEEP=1 to keep them)"
  fi
}
trap cleanup EXIT
rm -rf "$DEMO"; mkdir -p "$DEMO"
install -m 0755 target/release/walarch "$DEMO/walarch"     # reachable by the postgres user
[ "$(id -u)" = 0 ] && chown postgres: "$DEMO"
WALARCH="$DEMO/walarch"; REPO="$DEMO/repo"

say "1. a PostgreSQL 15 cluster archiving through walarch into $REPO"
as_pg "$PGBIN/initdb" -D "$DEMO/primary" -A trust -U postgres --no-instructions >/dev/null
cat >>"$DEMO/primary/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PORT_A
unix_socket_directories = '$DEMO'
archive_mode = on
archive_command = '$WALARCH wal-push --repo $REPO %p'
CONF
as_pg "$PGBIN/pg_ctl" -D "$DEMO/primary" -l "$DEMO/primary.log" -w start >/dev/null
echo "archive_command = '$WALARCH wal-push --repo $REPO %p'"

say "2. some data, then a base backup"
sql $PORT_A "create table accounts (id int primary key, owner text, balance numeric)"
sql $PORT_A "insert into accounts select g, 'owner ' || g, 100 from generate_series(1, 50000) g"
as_pg "$WALARCH" --repo "$REPO" backup --dbname "host=127.0.0.1 port=$PORT_A user=postgres"
as_pg "$WALARCH" --repo "$REPO" backups

say "3. more work after the backup"
sql $PORT_A "update accounts set balance = balance + id % 10 where id % 3 = 0"
sql $PORT_A "insert into accounts select g, 'late owner ' || g, 50 from generate_series(50001, 60000) g"
EXPECTED=$(sql $PORT_A "select count(*) || ' rows, total balance ' || sum(balance) from accounts")
sleep 1
TARGET=$(sql $PORT_A "select now()")
sleep 1
echo "state at $TARGET: $EXPECTED"

say "4. the mistake"
sql $PORT_A "delete from accounts where id > 10"
sql $PORT_A "insert into accounts values (99999999, 'written after the mistake', 0)"
echo "after the mistake: $(sql $PORT_A "select count(*) || ' rows' from accounts")"
LAST=$(sql $PORT_A "select pg_walfile_name(pg_switch_wal())")
for _ in $(seq 300); do
  [ "$(sql $PORT_A "select coalesce(last_archived_wal, '') >= '$LAST' from pg_stat_archiver")" = t ] && break
  sleep 0.1
done
as_pg "$PGBIN/pg_ctl" -D "$DEMO/primary" -m fast -w stop >/dev/null
echo "archived through $LAST; the primary is stopped"
echo "repository: $(find "$REPO/wal" -type f | wc -l) WAL files, $(du -sh "$REPO" | cut -f1) stored"

say "5. before restoring: can the archive reach $TARGET?"
as_pg "$WALARCH" --repo "$REPO" info | grep -E "^(timeline|recoverable)"
as_pg "$WALARCH" --repo "$REPO" plan --target-time "$TARGET"

say "6. recover a copy to $TARGET, one second before the mistake"
# --start starts PostgreSQL on the copy and waits until recovery has reached the target.
as_pg "$WALARCH" --repo "$REPO" restore --pgdata "$DEMO/restored" \
  --target-time "$TARGET" --target-action promote \
  --set port=$PORT_B --set archive_mode=off --start --pg-bin "$PGBIN"

say "7. the data is back"
GOT=$(sql $PORT_B "select count(*) || ' rows, total balance ' || sum(balance) from accounts")
echo "expected: $EXPECTED"
echo "restored: $GOT"
if [ "$GOT" = "$EXPECTED" ]; then echo "OK: point-in-time recovery through walarch restored the data exactly"; else echo "MISMATCH"; exit 1; fi

say "8. the same recovery as a drill: carried out in a scratch copy, checked, measured, recorded"
# What cron would run every week: RTO and RPO measured, the report stored in the repository.
COUNT=${EXPECTED%% rows*}; BALANCE=${EXPECTED##* }
mkdir -p "$DEMO/drills"; [ "$(id -u)" = 0 ] && chown postgres: "$DEMO/drills"
as_pg "$WALARCH" --repo "$REPO" drill --target-time "$TARGET" --scratch "$DEMO/drills" --pg-bin "$PGBIN" \
  --check "select count(*) = $COUNT and sum(balance) = $BALANCE from accounts"
as_pg "$WALARCH" --repo "$REPO" info | grep -E "^drill"
