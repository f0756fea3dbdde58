'use strict';
// Re-embeds the texts of testdata/use-lite/reference_embeddings.jsonl (each alone) with another
// backend and prints the largest absolute difference from the committed embeddings, and
// whether the library's tokenizer still gives the committed ids of reference_tokens.jsonl.
//
//   node check.js [--backend wasm|cpu|shipped]

const fs = require('fs');
const path = require('path');
const { loadModel } = require('./lib');

const DIR = path.resolve(__dirname, '..', '..', 'testdata', 'use-lite');
const read = (f) => fs.readFileSync(path.join(DIR, f), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));

async function main() {
  const i = process.argv.indexOf('--backend');
  const backend = i > 0 ? process.argv[i + 1] : 'wasm';
  const { model, versions } = await loadModel(backend, { threads: 1 });
  let tokMismatch = 0;
  const toks = read('reference_tokens.jsonl');
  for (const r of toks) if (JSON.stringify(model.tokenizer.encode(r.text)) !== JSON.stringify(r.ids)) tokMismatch++;
  let maxDiff = 0;
  let worst = null;
  for (const r of read('reference_embeddings.jsonl')) {
    const [v] = await model.embed([r.text]);
    for (let k = 0; k < v.length; k++) {
      const d = Math.abs(Math.fround(v[k]) - Math.fround(r.embedding[k]));
      if (d > maxDiff) { maxDiff = d; worst = r.source; }
    }
  }
  console.log(JSON.stringify({ check: 'reference', backend, versions, token_texts: toks.length, token_mismatches: tokMismatch, max_abs_diff_embeddings: maxDiff, worst_source: worst }));
}

main().catch((e) => { console.error(e); process.exit(1); });
