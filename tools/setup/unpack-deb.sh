#!/usr/bin/env bash
# unpack-deb.sh DIR PACKAGE VERSION: download one Debian package at its pinned version (no install,
# no root) and unpack it into DIR. When the archive no longer has that version (a point release
# replaced it) the current one is taken, with a warning, and written into DIR/VERSION either way.
set -euo pipefail
dir=$1 pkg=$2 version=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
if ! apt-get download -qq "$pkg=$version" 2>/dev/null; then
  apt-get update -qq || true
  if ! apt-get download -qq "$pkg=$version"; then
    echo ">> WARNING: $pkg $version is gone from Debian's archive; using its current version" >&2
    apt-get download -qq "$pkg"
  fi
fi
deb=$(ls "$work"/*.deb)
mkdir -p "$dir"
dpkg-deb -x "$deb" "$dir"
dpkg-deb -f "$deb" Version > "$dir/VERSION"
echo ">> $pkg $(cat "$dir/VERSION") unpacked"
