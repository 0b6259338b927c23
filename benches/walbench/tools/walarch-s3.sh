# walarch against the loopback S3 server started by s3.sh (plain HTTP endpoint, no TLS front needed).
# Override the whole environment with WALARCH_S3_ENV if needed.
default_env="WALARCH_REPO=s3://$S3_BUCKET/{S3PREFIX} AWS_ENDPOINT=http://127.0.0.1:$S3_PORT AWS_ALLOW_HTTP=true AWS_ACCESS_KEY_ID=$S3_KEY AWS_SECRET_ACCESS_KEY=$S3_SECRET AWS_REGION=$S3_REGION"
WALARCH_ENV=${WALARCH_S3_ENV:-$default_env}
# shellcheck source=/dev/null
source "$BENCH_DIR/tools/walarch.sh"
tool_prepare() { :; }
tool_store_bytes() { "$BARMAN_BIN/python" "$BENCH_DIR/s3util.py" du "$S3PREFIX" 2>/dev/null || echo NA; }
tool_cleanup() { "$BARMAN_BIN/python" "$BENCH_DIR/s3util.py" rm "$S3PREFIX" 2>/dev/null || true; }
