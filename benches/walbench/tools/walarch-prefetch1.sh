# walarch with one download ahead at a time (WALARCH_PREFETCH=1): recovery on a 2-core machine.
WALARCH_ENV='WALARCH_REPO=file://{STORE} WALARCH_PREFETCH=1'
# shellcheck source=/dev/null
source "$BENCH_DIR/tools/walarch.sh"
