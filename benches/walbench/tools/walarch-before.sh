# walarch, an earlier build ($WALARCH_BEFORE_BIN), into a local repository: interleaved.sh runs
# it beside the current build so that a change is measured before and after in the same rounds.
WALARCH_BIN=${WALARCH_BEFORE_BIN:?set WALARCH_BEFORE_BIN to the earlier build}
# shellcheck source=/dev/null
source "$BENCH_DIR/tools/walarch.sh"
