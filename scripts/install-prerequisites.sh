#!/usr/bin/env bash
# Installs what walarch's demo and tests need on a fresh Debian machine, and nothing that is
# already there: PostgreSQL 15, the zstd tool, etcd (the cluster tests' coordination store),
# protoc (etcd's client is generated from its .proto files at build time), and moto (an
# S3-compatible server for tests; PyYAML and jsonschema, which check the Kubernetes manifests;
# prometheus-client, whose OpenMetrics parser reads `walarch metrics` in a test).
# Prints the moto_server path on its last line for the caller.
set -euo pipefail

need_apt=()
[ -x /usr/lib/postgresql/15/bin/postgres ] || need_apt+=(postgresql-15)
command -v zstd >/dev/null || need_apt+=(zstd)
command -v runuser >/dev/null || need_apt+=(util-linux)
command -v etcd >/dev/null || need_apt+=(etcd-server)
command -v protoc >/dev/null || need_apt+=(protobuf-compiler)
# The encryption tests open a stored object by hand, as the README's emergency path does.
command -v age >/dev/null || need_apt+=(age)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing: ${need_apt[*]}; install them (sudo apt-get install ${need_apt[*]}) and run again" >&2
    exit 1
  fi
  echo "installing ${need_apt[*]}" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >&2
fi

if [ "${WITH_MOTO:-1}" = 1 ]; then
  moto=$(command -v moto_server || true)
  if [ -z "$moto" ]; then
    echo "installing moto[server]" >&2
    python3 -m pip install -q 'moto[server]' >&2
    moto=$(python3 -c 'import os, sys; print(os.path.join(os.path.dirname(sys.executable), "moto_server"))')
  fi
  [ -x "$moto" ] || { echo "moto_server not found after install" >&2; exit 1; }
  # The Kubernetes manifests are checked against the CRD schemas in Python (tests/k8s).
  python3 -c 'import yaml, jsonschema' 2>/dev/null || python3 -m pip install -q pyyaml jsonschema >&2
  # The metrics test parses `walarch metrics` with the Prometheus project's own parser.
  python3 -c 'import prometheus_client' 2>/dev/null || python3 -m pip install -q prometheus-client >&2
  echo "$moto"
fi
