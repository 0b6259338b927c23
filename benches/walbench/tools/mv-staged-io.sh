# The floor of a restore_command that writes the WAL while replay runs: mv-staged (every segment
# staged beforehand, only renamed into place), plus, from the first call, a background writer
# putting 1 GiB through pg_wal's file system in 16 MiB files with fsync, at replay's pace, as a
# fetch-ahead worker's spool does (restore_with_writer.sh). Restore only:
#   RESTORE_AS=mv-staged-io run_restore.sh cp
# shellcheck source=/dev/null
source "$BENCH_DIR/tools/mv-staged.sh"
TOOL_DESC="mv RUN/staged/%f %p, with 1 GiB written beside it (floor of a fetching restore_command)"
RESTORE_CMD="$BENCH_DIR/restore_with_writer.sh {RUN} %f %p"
