#!/usr/bin/env bash
# Runs every check walarch has: formatting, lints, the library's documentation, unit tests,
# end-to-end tests against real PostgreSQL servers (Debian's 15; 12 to 18 from
# scripts/install-postgres-majors.sh for the version matrix), a real S3-compatible server on
# 127.0.0.1 (the library's examples included), the storage conformance suite on the local file
# system, moto (S3) and azurite (Azure Blob, from scripts/install-emulators.sh), a three-member
# cluster under walarch-k8s with a real etcd, `walarch metrics` read by Prometheus's own parsers
# (prometheus-client, promtool from scripts/install-promtool.sh), and a build of the fuzz targets.
# Installs what a fresh machine lacks first. This is the command README.md gives and CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

# A test run builds everything once: incremental state would only add gigabytes to target/.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# A build that runs out of disk fails in the linker with an obscure message; say it up front.
free_kib=$(df -Pk . | awk 'NR == 2 { print $4 }')
if [ "$free_kib" -lt $((8 * 1024 * 1024)) ]; then
    echo "scripts/test.sh: only $((free_kib / 1024)) MiB free here; a clean build and test run needs about 8 GiB" >&2
fi

WALARCH_MOTO_SERVER=$(scripts/install-prerequisites.sh | tail -n 1)
export WALARCH_MOTO_SERVER
WALARCH_PG_MAJORS_DIR=$(scripts/install-postgres-majors.sh | tail -n 1)
export WALARCH_PG_MAJORS_DIR
WALARCH_AZURITE=$(scripts/install-emulators.sh | tail -n 1)
export WALARCH_AZURITE
WALARCH_PROMTOOL=$(scripts/install-promtool.sh | tail -n 1)
export WALARCH_PROMTOOL

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The library's public API is documented, every item (missing_docs), without broken links.
RUSTDOCFLAGS="-D warnings" cargo doc -p walarch-core --no-deps --locked
# The end-to-end tests drive the built binaries.
cargo build --locked -p walarch-cli -p walarch-k8s
results=$(mktemp)
trap 'rm -f "$results"' EXIT
cargo test --workspace --locked 2>&1 | tee "$results"
# The Kubernetes manifests against the CRD schemas (and their CEL rules); the suite for a real
# Kubernetes cluster says SKIPPED unless one is configured (WALARCH_K8S_E2E=1).
python3 tests/k8s/validate_examples.py
tests/k8s/run.sh
# Fuzz targets build on stable (running them needs cargo-fuzz; see fuzz/README.md).
(cd fuzz && cargo build --locked)

# One closing line for the whole run (cargo prints one per test binary).
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "walarch: %d passed, %d failed\n", passed, failed }' "$results"
