#!/usr/bin/env bash
# Times a whole training job through the real server: a use-lite vPLM on
# the spam task (4,836 training and 605 validation emails), from the train
# request to the committed version, then scores it on the test split.
#
#   scripts/train-spam.sh                      # the defaults (10 epochs, patience 3)
#   TRAIN_FLAGS="--epochs 3" scripts/train-spam.sh
#
# The backbone and the dataset are copied from TEST_DATA (default
# .cache/smile-test; `bin/smile data pull spam --data-dir .cache/smile-test`
# fetches the dataset), so no download is timed.
set -euo pipefail
cd "$(dirname "$0")/.."
TEST_DATA=${TEST_DATA:-.cache/smile-test}
S=${S:-bin/smile}
D=$(mktemp -d)
ADDR=127.0.0.1:${PORT:-7099}
mkdir -p "$D/datasets"
cp -r "$TEST_DATA/backbones" "$TEST_DATA/blobs" "$D/"
cp -r "$TEST_DATA/datasets/spam" "$D/datasets/"
"$S" serve --data-dir "$D" --addr "$ADDR" > "$D/serve.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$D"' EXIT
for _ in $(seq 1 120); do "$S" ls --server "$ADDR" > /dev/null 2>&1 && break; sleep 0.5; done
"$S" create spamclf --task classify --labels ham,spam --server "$ADDR" > /dev/null
start=$(date +%s%N)
# shellcheck disable=SC2086
"$S" train spamclf --data spam --server "$ADDR" --json ${TRAIN_FLAGS:-}
end=$(date +%s%N)
echo "{\"bench\":\"train-job\",\"task\":\"spam\",\"flags\":\"${TRAIN_FLAGS:-}\",\"wall_s\":$(( (end - start) / 1000000 ))e-3}"
"$S" eval spamclf --data spam --server "$ADDR" --json
