#!/usr/bin/env bash
# Generates the Go code for api/smilepb/*.proto into OUT (default: the
# repository itself, which is what `make proto` does). The generators are
# pinned: protoc by Debian's protobuf-compiler package (its version is written
# into the generated header, so the check below refuses any other), and
# protoc-gen-go by go.mod's `tool` directive.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-.}
want_protoc="libprotoc 3.21.12"
if ! command -v protoc >/dev/null 2>&1; then
  scripts/deps.sh proto
fi
if [ "$(protoc --version)" != "$want_protoc" ]; then
  echo "proto: need $want_protoc (Debian bookworm's protobuf-compiler), have $(protoc --version)" >&2
  exit 1
fi
plugin=$(go tool -n protoc-gen-go)
mkdir -p "$out"
protoc --plugin=protoc-gen-go="$plugin" -I . \
  --go_out="$out" --go_opt=paths=source_relative \
  api/smilepb/*.proto
