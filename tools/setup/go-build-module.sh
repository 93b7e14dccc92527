#!/usr/bin/env bash
# go-build-module.sh OUT MODULE VERSION BINARY PACKAGE: build PACKAGE of MODULE@VERSION as the main
# module from a copy of its downloaded source (for modules whose go.mod has replace directives, which
# `go install module@version` refuses), into OUT/BINARY, without symbol tables and with paths trimmed.
set -euo pipefail
out=$1 module=$2 version=$3 binary=$4 package=$5
src=$(mktemp -d)
trap 'chmod -R u+w "$src" 2>/dev/null; rm -rf "$src"' EXIT
dir=$(cd "$src" && GOFLAGS=-mod=mod go mod download -json "$module@$version" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
cp -r "$dir/." "$src/"
chmod -R u+w "$src"
cd "$src"
GOFLAGS=-mod=mod go build -trimpath -ldflags='-s -w' -o "$out/$binary" "$package"
