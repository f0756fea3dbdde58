#!/usr/bin/env bash
# Fails when the committed generated code in api/smilepb differs from what
# `make proto` would write now: regenerates into a temporary directory with
# the pinned generators and diffs the two.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
scripts/proto.sh "$tmp"
status=0
for f in "$tmp"/api/smilepb/*.pb.go; do
  rel=${f#"$tmp"/}
  if ! diff -u "$rel" "$f"; then status=1; fi
done
for f in api/smilepb/*.pb.go; do
  [ -e "$tmp/$f" ] || { echo "proto-check: $f is not generated from any .proto" >&2; status=1; }
done
if [ "$status" -ne 0 ]; then
  echo "proto-check: generated code is stale; run 'make proto' and commit the result" >&2
else
  echo "proto-check: api/smilepb is up to date"
fi
exit "$status"
