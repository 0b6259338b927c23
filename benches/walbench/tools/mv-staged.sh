# The floor of any restore_command: every segment staged beforehand (copied from cp's archive
# and flushed, outside the timed part) on pg_wal's file system, and the command only renames it
# into place. What remains is PostgreSQL's own cost per restored file (fork and sh for the
# command, the durable_rename fsyncs, the .done file). Restore only:
#   RESTORE_AS=mv-staged run_restore.sh cp
TOOL_DESC="mv RUN/staged/%f %p (floor of a restore_command)"
TOOL_VERSION="coreutils $(mv --version | head -1 | awk '{print $NF}')"
RESTORE_CMD='mv {RUN}/staged/%f %p'
tool_prepare_restore() {
  mkdir_pg "$RUN_DIR/staged"
  cp "$STORE"/0000000100000000000000?? "$RUN_DIR/staged/"
  chown -R "$PG_OS_USER": "$RUN_DIR/staged"
  sync
}
