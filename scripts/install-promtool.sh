#!/usr/bin/env bash
# Installs promtool, Prometheus's checker of rule files and metric expositions, for the metrics
# test (tests/e2e_metrics.rs): the one on PATH if there is one, else the binary taken out of
# Debian's `prometheus` package into a cache, without installing the package (that would
# start a Prometheus server). Prints the promtool program on its last line.
set -euo pipefail

if command -v promtool >/dev/null; then
  command -v promtool
  exit 0
fi
if [ "$(id -u)" = 0 ]; then
  cache=${WALARCH_TOOL_CACHE:-/var/cache/walarch/tools}
else
  cache=${WALARCH_TOOL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/walarch/tools}
fi
dest=$cache/prometheus
if [ ! -x "$dest/usr/bin/promtool" ]; then
  echo "installing promtool (from Debian's prometheus package)" >&2
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  if ! (cd "$work" && apt-get download prometheus >&2 2>/dev/null); then
    [ "$(id -u)" = 0 ] || { echo "cannot download Debian's prometheus package: run apt-get update as root first" >&2; exit 1; }
    apt-get update -qq >&2
    (cd "$work" && apt-get download prometheus >&2)
  fi
  rm -rf "$dest.partial"
  mkdir -p "$dest.partial"
  dpkg-deb -x "$work"/prometheus_*.deb "$dest.partial"
  rm -rf "$dest"
  mv "$dest.partial" "$dest"
fi
echo "$dest/usr/bin/promtool"
