#!/usr/bin/env bash
# Runs every fuzz target in the module briefly (FUZZTIME each, default 5s), so
# the decoders and tokenizers are fuzzed in CI on every change. Targets are
# discovered with `go test -list`, so a new Fuzz function is picked up
# without editing this file.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime="${FUZZTIME:-5s}"
count=0
for pkg in $(go list ./...); do
  # A package that does not compile must fail the run, not lose its targets.
  listing=$(go test -list '^Fuzz' "$pkg")
  targets=$(printf '%s\n' "$listing" | grep '^Fuzz' || true)
  for t in $targets; do
    echo "fuzz: $pkg $t ($fuzztime)"
    go test -run '^$' -fuzz "^${t}\$" -fuzztime "$fuzztime" -fuzzminimizetime 1s -parallel 2 "$pkg" >/tmp/fuzz-$$.log 2>&1 || {
      cat /tmp/fuzz-$$.log; rm -f /tmp/fuzz-$$.log; echo "fuzz: $t failed" >&2; exit 1; }
    count=$((count+1))
  done
done
rm -f /tmp/fuzz-$$.log
echo "fuzz: $count targets ran without a crash"
[ "$count" -gt 0 ]
