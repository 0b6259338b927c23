#!/usr/bin/env bash
# Installs the object-store emulators the storage conformance suite runs against, besides moto
# (scripts/install-prerequisites.sh): azurite, Microsoft's Azure Blob emulator, from npm,
# pinned, fetched once per machine into a cache. Prints the azurite program on its last line.
#
# Google Cloud Storage has no emulator here that speaks the XML API object_store uses (see
# README.md, "Use it with PostgreSQL"); its leg of the suite runs against a real bucket.
set -euo pipefail

AZURITE_VERSION=3.37.0

if [ "$(id -u)" = 0 ]; then
  cache=${WALARCH_EMULATOR_CACHE:-/var/cache/walarch/emulators}
else
  cache=${WALARCH_EMULATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/walarch/emulators}
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

dest=$cache/azurite-$AZURITE_VERSION
if [ ! -x "$dest/node_modules/.bin/azurite-blob" ]; then
  echo "installing azurite $AZURITE_VERSION" >&2
  rm -rf "$dest.partial"
  mkdir -p "$dest.partial"
  npm install --silent --no-audit --no-fund --prefix "$dest.partial" "azurite@$AZURITE_VERSION" >&2
  rm -rf "$dest"
  mv "$dest.partial" "$dest"
fi
echo "$dest/node_modules/.bin/azurite-blob"
