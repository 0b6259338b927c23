# What writing the WAL beside replay costs: mv-staged (every segment staged beforehand, only
# renamed into place), plus, from the first call, a background writer putting 1 GiB through
# pg_wal's file system in 16 MiB files with fsync, evenly at replay's pace (restore_with_writer.sh).
# Not a floor: walarch's worker writes ahead in a burst and measured faster than this (issue 17,
# benches/README.md). Restore only:
#   RESTORE_AS=mv-staged-io run_restore.sh cp
# shellcheck source=/dev/null
source "$BENCH_DIR/tools/mv-staged.sh"
TOOL_DESC="mv RUN/staged/%f %p, with 1 GiB written evenly beside it"
RESTORE_CMD="$BENCH_DIR/restore_with_writer.sh {RUN} %f %p"
