#!/usr/bin/env bash
# The race-enabled test suite, with a closing count of passed and failed
# tests (top-level and subtests) so a reader — or CI — sees at a glance what
# ran. Package lines and failures are printed; the full -v log is kept in
# .cache/test-race.log.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p .cache
log=.cache/test-race.log
go test -race -count=1 -timeout 20m -v ./... >"$log" 2>&1
rc=$?
grep -E '^(ok|FAIL|\?|panic:)|--- FAIL' "$log"
if [ "$rc" -ne 0 ]; then
  echo "--- end of the log ($log) ---"
  tail -n 80 "$log"
fi
passed=$(grep -cE '^\s*--- PASS' "$log")
failed=$(grep -cE '^\s*--- FAIL' "$log")
skipped=$(grep -cE '^\s*--- SKIP' "$log")
echo "tests: $passed passed, $failed failed, $skipped skipped"
exit "$rc"
