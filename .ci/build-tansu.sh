#!/usr/bin/env bash
# Builds the Kafka-protocol test broker (tansu) once into a cache outside the clone and reuses it.
set -euo pipefail
cache="${TIDEMILL_CACHE:-$HOME/.cache/tidemill}"
version=0.6.0
bin="$cache/tansu-$version/bin/tansu"
if [ -x "$bin" ]; then
  echo "tansu $version: reusing $bin"
  exit 0
fi
mkdir -p "$cache"
echo "tansu $version: building into $cache (takes 15-30 minutes on a fresh machine)"
CARGO_TARGET_DIR="$cache/tansu-target" cargo install tansu --version "$version" --locked \
  --features dynostore,libsql --root "$cache/tansu-$version"
rm -rf "$cache/tansu-target"
echo "tansu $version: built $bin"
