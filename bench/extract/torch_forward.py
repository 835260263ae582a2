#!/usr/bin/env python3
"""PyTorch (CPU) forward pass of the synthetic Qwen2 model, on the very weights of its ONNX file.

Run by bench/extract (not a test, not a dependency): reads `weights.json` (names, offsets and
shapes of the initializers in `model.onnx_data`, written by the bench) and memory-maps the
data file, so PyTorch and onnxruntime compute with identical weights. Computes all residual
streams (like the pruned ONNX model: no lm head) and times best-of-N.

Usage: torch_forward.py MODEL_DIR --batch 4 --seq 512 --iters 3 --threads 2
       [--tokens FILE.i32] [--compare FILE.f32 --compare-layer L]
Prints one JSON line.
"""

import argparse
import json
import math
import os
import time

import numpy as np
import torch


def load(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    with open(os.path.join(model_dir, "weights.json")) as f:
        index = json.load(f)
    data = os.path.join(model_dir, "model.onnx_data")
    weights = {}
    for name, e in index.items():
        if "values" in e:
            arr = np.asarray(e["values"], dtype=np.float32).reshape(e["dims"])
        else:
            arr = np.memmap(data, dtype=np.float32, mode="c", offset=e["offset"], shape=tuple(e["dims"]))
        weights[name] = torch.from_numpy(arr)
    return cfg, weights


def forward(cfg, w, ids):
    B, S = ids.shape
    H = cfg["hidden_size"]
    heads = cfg["num_attention_heads"]
    kv = cfg["num_key_value_heads"]
    D = H // heads
    G = heads // kv
    eps = cfg["rms_norm_eps"]
    theta = cfg["rope_theta"]

    def rms(x, weight):
        return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))

    def mm(x, name):  # ONNX initializers are [in, out]
        return torch.matmul(x, w["onnx::MatMul." + name])

    inv = 1.0 / (theta ** (torch.arange(0, D, 2, dtype=torch.float32) / D))
    pos = torch.arange(S, dtype=torch.float32)
    freqs = torch.outer(pos, inv)
    emb = torch.cat([freqs, freqs], dim=-1)
    cos, sin = emb.cos()[None, None], emb.sin()[None, None]

    def rope(x):
        x1, x2 = x[..., : D // 2], x[..., D // 2 :]
        return x * cos + torch.cat([-x2, x1], dim=-1) * sin

    mask = torch.full((S, S), float("-inf")).triu(1)
    h = w["model.embed_tokens.weight"][ids]
    out = []
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        x = rms(h, w[p + "input_layernorm.weight"])
        q = (mm(x, p + "self_attn.q_proj.weight") + w[p + "self_attn.q_proj.bias"]).view(B, S, heads, D).transpose(1, 2)
        k = (mm(x, p + "self_attn.k_proj.weight") + w[p + "self_attn.k_proj.bias"]).view(B, S, kv, D).transpose(1, 2)
        v = (mm(x, p + "self_attn.v_proj.weight") + w[p + "self_attn.v_proj.bias"]).view(B, S, kv, D).transpose(1, 2)
        q, k = rope(q), rope(k)
        k = k.repeat_interleave(G, dim=1)
        v = v.repeat_interleave(G, dim=1)
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(D) + mask
        ctx = torch.matmul(torch.softmax(scores, dim=-1), v).transpose(1, 2).reshape(B, S, H)
        h = h + mm(ctx, p + "self_attn.o_proj.weight")
        x2 = rms(h, w[p + "post_attention_layernorm.weight"])
        gate = mm(x2, p + "mlp.gate_proj.weight")
        h = h + mm(torch.nn.functional.silu(gate) * mm(x2, p + "mlp.up_proj.weight"), p + "mlp.down_proj.weight")
        out.append(h)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", help="int32 token ids for the compare run, [1, n]")
    ap.add_argument("--compare", help="float32 [n, hidden] residuals from onnxruntime")
    ap.add_argument("--compare-layer", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg, w = load(args.model_dir)
    result = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    with torch.inference_mode():
        if args.tokens and args.compare:
            ids = torch.from_numpy(np.fromfile(args.tokens, dtype=np.int32).astype(np.int64))[None]
            mine = forward(cfg, w, ids)[args.compare_layer][0].numpy()
            theirs = np.fromfile(args.compare, dtype=np.float32).reshape(mine.shape)
            result["compare_max_abs_diff"] = float(np.abs(mine - theirs).max())
            result["compare_max_abs_value"] = float(np.abs(theirs).max())
        gen = torch.Generator().manual_seed(0)
        ids = torch.randint(0, cfg["vocab_size"], (args.batch, args.seq), generator=gen)
        forward(cfg, w, ids)  # warm-up
        times = []
        for _ in range(args.iters):
            t0 = time.perf_counter()
            forward(cfg, w, ids)
            times.append(time.perf_counter() - t0)
    best = min(times)
    result.update({"batch": args.batch, "seq": args.seq, "times_s": times, "tok_s": args.batch * args.seq / best})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
