#!/usr/bin/env bash
# SMILE vs its JS reference on the same machine, in one run: the JS
# library's fastest configuration (TF.js 4.22 wasm SIMD, batches of 32
# length-sorted texts) and `smile bench forward` for use-lite, both on the
# 1,000 imdb sentences of internal/benchdata, then one JSON line with the
# ratio. Usage: scripts/bench-vs-js.sh [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
quick=""
[ "${1:-}" = "--quick" ] && quick="--quick"

make --no-print-directory build >/dev/null
if [ ! -d scripts/reference/node_modules ]; then
  (cd scripts/reference && npm ci --no-audit --no-fund --silent)
fi
js=$(cd scripts/reference && node bench.js $quick --backends wasm-simd-1t --batches 32)
go=$(bin/smile bench forward --backbone use-lite $quick --json)
printf '%s\n%s\n' "$js" "$go"
JS="$js" GO="$go" node -e '
const parse = (s) => s.trim().split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
const js = parse(process.env.JS).filter((r) => r.bench === "js-reference" && r.batch === 32 && r.seq_per_s);
const best = js.reduce((a, b) => (b.seq_per_s > a.seq_per_s ? b : a));
const go = parse(process.env.GO).find((r) => r.backbone === "use-lite" && r.batch === 32);
console.log(JSON.stringify({
  bench: "use-lite-vs-js", texts: "imdb", batch: 32,
  smile_seq_per_s: go.seq_per_s, js_seq_per_s: best.seq_per_s, js_config: `${best.backend} sorted=${best.sorted}`,
  ratio: Math.round((go.seq_per_s / best.seq_per_s) * 100) / 100,
  smile_seq_per_cpu_s: go.seq_per_cpu_s, js_seq_per_cpu_s: best.seq_per_cpu_s,
  cpu_ratio: best.seq_per_cpu_s ? Math.round((go.seq_per_cpu_s / best.seq_per_cpu_s) * 100) / 100 : null,
}));'
