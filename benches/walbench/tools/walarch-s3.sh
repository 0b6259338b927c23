# walarch against the loopback S3 server started by s3.sh (plain HTTP endpoint, no TLS front needed).
WALARCH_ENV=${WALARCH_S3_ENV:-"WALARCH_REPO=s3://$S3_BUCKET/{S3PREFIX} AWS_ENDPOINT=http://127.0.0.1:$S3_PORT AWS_ENDPOINT_URL=http://127.0.0.1:$S3_PORT AWS_ALLOW_HTTP=true AWS_ACCESS_KEY_ID=$S3_KEY AWS_SECRET_ACCESS_KEY=$S3_SECRET AWS_REGION=$S3_REGION"}
# shellcheck source=/dev/null
source "$BENCH_DIR/tools/walarch.sh"
tool_prepare() { :; }
tool_store_bytes() { "$BARMAN_BIN/python" "$BENCH_DIR/s3util.py" du "$S3PREFIX" 2>/dev/null || echo NA; }
