'use strict';
// Throughput of the JS reference (@energetic-ai/embeddings@0.2.0 + model-embeddings-en@0.2.0)
// on internal/benchdata/imdb.txt, the 1,000 texts the Go benchmarks also read.
//
//   node bench.js [--quick] [--full] [--backends wasm-simd-1t,wasm-simd-mt,cpu,shipped]
//                 [--batches 1,32,128]
//
// For each backend and batch size, in fixture order and with batches of length-sorted texts:
// a warm-up, then the median of 5 passes (--quick: 1 pass), printed as one JSON line each.
// A pass embeds every text once through model.embed (tokenizer included) and waits for the
// result. seq_per_s is texts / median wall seconds; seq_per_cpu_s is texts / median CPU
// seconds (user+sys) of the pass, which stays meaningful when other jobs share the cores
// (loadavg1 is the 1-minute load average around the passes). Each backend runs in its own
// child process (TF.js holds one backend per process).
//   wasm-simd-1t  TF.js 4.22.0 wasm backend, SIMD, 1 thread (what gen.js uses)
//   wasm-simd-mt  same with 2 threads; TF.js disables wasm threads in Node (tfjs#3830) and
//                 forcing them fails (its worker is a blob: URL), so this prints an error line
//   cpu           TF.js 4.22.0 plain-JS cpu backend; about 25x slower, so it runs on every 10th
//                 text (100 texts) with 3 passes unless --full
//   shipped       the library as published: TF.js 4.5.0 wasm bundled in @energetic-ai/core
// The last line names the fastest configuration.

const fs = require('fs');
const os = require('os');
const path = require('path');
const readline = require('readline');
const { spawn } = require('child_process');

const IMDB = path.resolve(__dirname, '..', '..', 'internal', 'benchdata', 'imdb.txt');
const has = (f) => process.argv.includes(f);
function arg(name, def) {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : def;
}

function readTexts() {
  const t = fs.readFileSync(IMDB, 'utf8').replace(/\n$/, '').split('\n');
  if (t.length !== 1000) throw new Error(`${IMDB}: ${t.length} texts`);
  return t;
}

const median = (a) => { const s = [...a].sort((x, y) => x - y); return s[s.length >> 1]; };

async function child(backend) {
  const { loadModel } = require('./lib');
  const quick = has('--quick');
  const full = has('--full');
  const batches = arg('--batches', '1,32,128').split(',').map(Number);
  let texts = readTexts();
  let passes = quick ? 1 : 5;
  if (backend === 'cpu' && !full) {
    texts = texts.filter((_, i) => i % 10 === 0);
    passes = quick ? 1 : 3;
  }
  const opts = {
    'wasm-simd-1t': ['wasm', { threads: 1 }],
    'wasm-simd-mt': ['wasm', { threads: 2, forceThreads: true }],
    cpu: ['cpu', {}],
    shipped: ['shipped', {}],
  }[backend];
  if (!opts) throw new Error(`unknown backend ${backend}`);
  const base = { bench: 'js-reference', backend, node: process.version };
  let loaded;
  try {
    loaded = await loadModel(opts[0], opts[1]);
  } catch (e) {
    console.log(JSON.stringify({ ...base, error: String((e && e.message) || e) }));
    return;
  }
  const { model, versions } = loaded;
  const lens = texts.map((t) => model.tokenizer.encode(t).length);
  const order = texts.map((_, i) => i);
  const sortedOrder = [...order].sort((a, b) => lens[a] - lens[b] || a - b);

  // One pass: wall seconds and CPU seconds (user+sys of this process; the wasm and cpu
  // backends compute on the main thread, so CPU time is the work done, whatever else runs).
  async function pass(idx, batch) {
    const c0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < idx.length; i += batch) {
      const out = await model.embed(idx.slice(i, i + batch).map((j) => texts[j]));
      if (out.length !== Math.min(batch, idx.length - i)) throw new Error('rows dropped');
    }
    const wall = Number(process.hrtime.bigint() - t0) / 1e9;
    const c = process.cpuUsage(c0);
    return { wall, cpu: (c.user + c.system) / 1e6 };
  }

  // warm-up: every batch shape once on a slice of the texts
  for (const b of batches) await pass(sortedOrder.slice(-Math.max(b, 32)), b);

  for (const batch of batches) {
    for (const sorted of [false, true]) {
      const idx = sorted ? sortedOrder : order;
      await pass(idx.slice(0, Math.min(idx.length, Math.max(batch, 64))), batch);
      const runs = [];
      const load0 = os.loadavg()[0];
      for (let p = 0; p < passes; p++) runs.push(await pass(idx, batch));
      const m = median(runs.map((r) => r.wall));
      const mc = median(runs.map((r) => r.cpu));
      console.log(JSON.stringify({
        ...base, batch, sorted, seq_per_s: Number((texts.length / m).toFixed(1)),
        seq_per_cpu_s: Number((texts.length / mc).toFixed(1)),
        texts: texts.length, passes, pass_s: runs.map((r) => Number(r.wall.toFixed(3))),
        tfjs: versions.tfjs, tfjs_backend: versions.backend, simd: versions.simd,
        threads: versions.threads, loadavg1: Number(((load0 + os.loadavg()[0]) / 2).toFixed(2)),
      }));
    }
  }
  if (backend === 'wasm-simd-1t') {
    const secs = [];
    for (let p = 0; p < passes; p++) {
      const t0 = process.hrtime.bigint();
      for (const t of texts) model.tokenizer.encode(t);
      secs.push(Number(process.hrtime.bigint() - t0) / 1e9);
    }
    console.log(JSON.stringify({
      ...base, backend: 'tokenizer-only', seq_per_s: Number((texts.length / median(secs)).toFixed(1)),
      texts: texts.length, passes, mean_tokens: Number((lens.reduce((a, b) => a + b, 0) / lens.length).toFixed(2)),
      max_tokens: Math.max(...lens),
    }));
  }
}

async function parent() {
  const backends = arg('--backends', 'wasm-simd-1t,wasm-simd-mt,cpu,shipped').split(',');
  const pass = process.argv.slice(2).filter((a, i, all) => a !== '--backends' && all[i - 1] !== '--backends');
  let best = null;
  let bestCPU = null;
  for (const b of backends) {
    const ch = spawn(process.execPath, [__filename, '--child', b, ...pass], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    ch.stderr.on('data', (d) => { stderr = (stderr + d).slice(-2000); });
    for await (const line of readline.createInterface({ input: ch.stdout })) {
      if (!line.startsWith('{')) continue;
      console.log(line);
      const o = JSON.parse(line);
      if (o.batch && o.seq_per_s && (!best || o.seq_per_s > best.seq_per_s)) best = o;
      if (o.batch && o.seq_per_cpu_s && (!bestCPU || o.seq_per_cpu_s > bestCPU.seq_per_cpu_s)) bestCPU = o;
    }
    const code = await new Promise((res) => (ch.exitCode !== null ? res(ch.exitCode) : ch.on('close', res)));
    if (code !== 0) {
      console.log(JSON.stringify({ bench: 'js-reference', backend: b, error: `exit ${code}`, stderr: stderr.slice(-500) }));
    }
  }
  if (best) {
    const pick = (o) => ({ backend: o.backend, batch: o.batch, sorted: o.sorted, seq_per_s: o.seq_per_s, seq_per_cpu_s: o.seq_per_cpu_s });
    console.log(JSON.stringify({ bench: 'js-reference', fastest: pick(best), fastest_cpu_time: pick(bestCPU) }));
  }
}

if (has('--child')) {
  child(arg('--child')).catch((e) => { console.error(e); process.exit(1); });
} else {
  parent().catch((e) => { console.error(e); process.exit(1); });
}
