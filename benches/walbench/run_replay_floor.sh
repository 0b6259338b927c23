#!/usr/bin/env bash
# The floor of B (recovery from the archive) on this machine: the same base backup and WAL as
# the last `KEEP=1 run_archive.sh cp` run, but every segment already in pg_wal and
# restore_command = 'false' (nothing fetched): what PostgreSQL's replay alone costs.
# usage: run_replay_floor.sh [RUNS]        -> $RESULTS/restore.tsv (tool "replay-only")
source "$(dirname "$0")/lib.sh"
RUNS=${1:-3}
KEEPF=$BENCH_ROOT/a/cp/keep.env
[ -f "$KEEPF" ] || die "no $KEEPF: run KEEP=1 run_archive.sh cp first"
# shellcheck source=/dev/null
source "$KEEPF"
TOP=$BENCH_ROOT/b/replay-only
mkdir_pg "$BENCH_ROOT/b"; rm -rf "$TOP"; mkdir_pg "$TOP"
HDR="tool	archive_from	run	replayed_bytes	recovery_s	replay_MBps	segments_fetched	our_cpu_s	foreign_cpu_s"
for i in $(seq 1 "$RUNS"); do
  RUN_DIR=$TOP/run$i; PGDATA=$RUN_DIR/pgdata; PORT=$PORT_B
  mkdir_pg "$RUN_DIR"
  cp -a "$BASE" "$PGDATA"; cp "$STORE"/0000000100000000000000?? "$PGDATA/pg_wal/"
  chown -R "$PG_OS_USER": "$PGDATA"; chmod 700 "$PGDATA"
  cat >>"$PGDATA/postgresql.conf" <<CONF
# ---- walbench replay floor
port = $PORT
unix_socket_directories = '$RUN_DIR'
archive_mode = off
restore_command = 'false'
hot_standby = off
recovery_target_timeline = 'latest'
CONF
  touch "$PGDATA/recovery.signal"; chown "$PG_OS_USER": "$PGDATA/recovery.signal"
  sync; wait_quiet
  b0=$(cpu_busy); our0=$(cg_usage)
  t0=$(now)
  pg_start "$PGDATA" -W
  until [ "$(psqlc 'select pg_is_in_recovery()' 2>/dev/null || true)" = f ]; do sleep 0.1; done
  t1=$(now)
  f=$(foreign_s $(( $(cpu_busy) - b0 )) $(( $(cg_usage) - our0 )))
  replay=$(psqlc "select pg_last_wal_replay_lsn()")
  bytes=$(psqlc "select pg_wal_lsn_diff('$replay','$START_LSN')::bigint")
  secs=$(fsub "$t1" "$t0")
  line="replay-only	cp	$i	$bytes	$secs	$(fdiv $((bytes/1048576)) "$secs")	0	$(ns2s $(( $(cg_usage) - our0 )))	$f"
  results_append restore.tsv "$HDR" "$line"
  log "B $line"
  pg_stop "$PGDATA"
  rm -rf "$RUN_DIR"
done
