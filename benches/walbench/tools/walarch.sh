# walarch into a local repository. compare.sh sets WALARCH_BIN to the release build.
#   WALARCH_ENV='WALARCH_REPO=file://{STORE}'      (filesystem store, default)
WALARCH_BIN=${WALARCH_BIN:-walarch}
TOOL_VERSION=$($WALARCH_BIN --version 2>/dev/null || echo unknown)
TOOL_DESC="walarch ($WALARCH_BIN) env: ${WALARCH_ENV:-WALARCH_REPO=file://{STORE}}"
ARCHIVE_CMD="$WALARCH_BIN wal-push %p"
RESTORE_CMD="$WALARCH_BIN wal-fetch %f %p"
read -r -a TOOL_ENV <<<"${WALARCH_ENV:-WALARCH_REPO=file://{STORE}}"
tool_prepare() { mkdir_pg "$STORE"; }
tool_prepare_restore() { :; }
