# walarch-s3 with an earlier build ($WALARCH_BEFORE_BIN): see walarch-before.sh.
WALARCH_BIN=${WALARCH_BEFORE_BIN:?set WALARCH_BEFORE_BIN to the earlier build}
# shellcheck source=/dev/null
source "$BENCH_DIR/tools/walarch-s3.sh"
