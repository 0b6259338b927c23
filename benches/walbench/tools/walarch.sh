# walarch into a local repository. compare.sh sets WALARCH_BIN to the release build.
# WALARCH_ENV overrides the environment given to PostgreSQL (and so to walarch).
WALARCH_BIN=${WALARCH_BIN:-walarch}
walarch_default_env='WALARCH_REPO=file://{STORE}'
WALARCH_ENV=${WALARCH_ENV:-$walarch_default_env}
TOOL_VERSION=$($WALARCH_BIN --version 2>/dev/null || echo unknown)
TOOL_DESC="walarch ($WALARCH_BIN) env: $WALARCH_ENV"
ARCHIVE_CMD="$WALARCH_BIN wal-push %p"
RESTORE_CMD="$WALARCH_BIN wal-fetch %f %p"
read -r -a TOOL_ENV <<<"$WALARCH_ENV"
tool_prepare() { mkdir_pg "$STORE"; }
tool_prepare_restore() { :; }
