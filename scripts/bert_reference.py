#!/usr/bin/python3
"""Reference BERT forward pass for SMILE's parity test.

Reads a Hugging Face BERT directory (config.json and model.safetensors, the
latter parsed by hand with numpy: no `transformers`, no model zoo) and a JSON
file of token-id sequences ({"sequences": [[ids...], ...]}, ids already with
[CLS]/[SEP]), runs each sequence alone through BERT with explicit torch ops
in float64, and writes JSON:

  {"dtype": "float64", "sequences": [{"ids": [...],
     "hidden": [[[...] per token] per layer, layer 0 = embeddings],
     "pooled": [...], "mean": [...]}]}

Run with Debian's interpreter (it has torch and numpy):

  /usr/bin/python3 scripts/bert_reference.py testdata/bert/tiny testdata/bert/tiny/inputs.json \
      testdata/bert/tiny/reference.json
"""
import json
import math
import struct
import sys

import numpy as np
import torch

DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64,
          "I64": np.int64, "I32": np.int32, "U8": np.uint8}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        if info["dtype"] == "BF16":
            raw = np.frombuffer(body[begin:end], dtype=np.uint16).astype(np.uint32) << 16
            arr = raw.view(np.float32)
        else:
            arr = np.frombuffer(body[begin:end], dtype=DTYPES[info["dtype"]])
        out[name] = arr.reshape(info["shape"])
    return out


def main(model_dir, inputs_path, out_path):
    with open(f"{model_dir}/config.json") as f:
        cfg = json.load(f)
    raw = read_safetensors(f"{model_dir}/model.safetensors")
    prefix = "bert." if "bert.embeddings.word_embeddings.weight" in raw else ""

    def t(name):
        return torch.from_numpy(raw[prefix + name].astype(np.float64))

    H = cfg["hidden_size"]
    heads = cfg["num_attention_heads"]
    dh = H // heads
    eps = cfg.get("layer_norm_eps", 1e-12)
    act_name = cfg.get("hidden_act", "gelu")

    def act(x):
        if act_name == "gelu":
            return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))
        if act_name in ("gelu_new", "gelu_pytorch_tanh"):
            return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
        if act_name == "relu":
            return torch.clamp(x, min=0)
        raise ValueError(act_name)

    def layer_norm(x, name):
        mu = x.mean(dim=-1, keepdim=True)
        var = ((x - mu) ** 2).mean(dim=-1, keepdim=True)
        return (x - mu) / torch.sqrt(var + eps) * t(name + ".weight") + t(name + ".bias")

    def linear(x, name):
        return x @ t(name + ".weight").T + t(name + ".bias")

    with open(inputs_path) as f:
        seqs = json.load(f)["sequences"]
    results = []
    for ids in seqs:
        n = len(ids)
        idx = torch.tensor(ids, dtype=torch.long)
        x = (t("embeddings.word_embeddings.weight")[idx]
             + t("embeddings.position_embeddings.weight")[:n]
             + t("embeddings.token_type_embeddings.weight")[0])
        x = layer_norm(x, "embeddings.LayerNorm")
        hidden = [x]
        for l in range(cfg["num_hidden_layers"]):
            p = f"encoder.layer.{l}."
            q = linear(x, p + "attention.self.query").view(n, heads, dh).transpose(0, 1)
            k = linear(x, p + "attention.self.key").view(n, heads, dh).transpose(0, 1)
            v = linear(x, p + "attention.self.value").view(n, heads, dh).transpose(0, 1)
            scores = (q @ k.transpose(1, 2)) / math.sqrt(dh)
            probs = torch.softmax(scores, dim=-1)
            ctx = (probs @ v).transpose(0, 1).reshape(n, H)
            x = layer_norm(linear(ctx, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
            inter = act(linear(x, p + "intermediate.dense"))
            x = layer_norm(linear(inter, p + "output.dense") + x, p + "output.LayerNorm")
            hidden.append(x)
        pooled = torch.tanh(linear(x[0], "pooler.dense"))
        results.append({
            "ids": ids,
            "hidden": [[[float("%.8g" % v) for v in row] for row in h.tolist()] for h in hidden],
            "pooled": [float("%.8g" % v) for v in pooled.tolist()],
            "mean": [float("%.8g" % v) for v in x.mean(dim=0).tolist()],
        })
    with open(out_path, "w") as f:
        json.dump({"dtype": "float64", "torch": torch.__version__, "sequences": results}, f,
                  separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
