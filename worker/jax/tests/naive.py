"""An independent decoder forward in float64 with plain loops: the reference for the tests.

Shares no code with shardline_jax. It follows transformers' Qwen2/Llama/Mistral decoder layer
one sequence at a time, no padding: RMSNorm, q/k/v (+ bias per family), rotate-half RoPE
(llama3 frequency scaling from Meta's formula), grouped KV heads, causal (+ sliding window)
softmax attention, o_proj, SwiGLU MLP, residual adds. `attend_to_future` breaks the mask on
purpose, to show that the comparison would catch it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def _linear(x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """x [n, in] · w[out, in]^T + b, as explicit sums over rows."""
    out = np.empty((x.shape[0], w.shape[0]))
    for t in range(x.shape[0]):
        out[t] = (w * x[t][None, :]).sum(axis=1)
        if b is not None:
            out[t] += b
    return out


def _rms(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    out = np.empty_like(x)
    for t in range(x.shape[0]):
        out[t] = w * x[t] / math.sqrt(sum(v * v for v in x[t]) / x.shape[1] + eps)
    return out


def _frequencies(config: dict[str, Any], D: int) -> list[float]:
    theta = config.get("rope_theta", 10000.0)
    freqs = [theta ** (-2 * j / D) for j in range(D // 2)]
    scaling = config.get("rope_scaling")
    if not scaling or scaling.get("rope_type", scaling.get("type")) != "llama3":
        return freqs
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    old = scaling["original_max_position_embeddings"]
    out = []
    for f in freqs:
        wavelength = 2 * math.pi / f
        if wavelength < old / high:
            out.append(f)
        elif wavelength > old / low:
            out.append(f / factor)
        else:
            smooth = (old / wavelength - low) / (high - low)
            out.append((1 - smooth) * f / factor + smooth * f)
    return out


def _rope(x: np.ndarray, heads: int, D: int, freqs: list[float]) -> None:
    """In place on [n, heads*D]: pairs (j, j + D/2) rotate by position · freq_j."""
    half = D // 2
    for t in range(x.shape[0]):
        for h in range(heads):
            base = h * D
            for j in range(half):
                c, s = math.cos(t * freqs[j]), math.sin(t * freqs[j])
                a, b = x[t, base + j], x[t, base + j + half]
                x[t, base + j] = a * c - b * s
                x[t, base + j + half] = b * c + a * s


def residuals(
    config: dict[str, Any], w: dict[str, np.ndarray], tokens: list[int], attend_to_future: bool = False
) -> list[np.ndarray]:
    """The residual stream after each layer, `[len(tokens), hidden]` float64 per layer."""
    H = config["hidden_size"]
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads", heads)
    D = config.get("head_dim") or H // heads
    G = heads // kv_heads
    eps = config["rms_norm_eps"]
    window = config.get("sliding_window") if config["model_type"] == "mistral" else None
    freqs = _frequencies(config, D)
    n = len(tokens)
    h = np.array([w["model.embed_tokens.weight"][t] for t in tokens], dtype=np.float64)
    out = []
    for layer in range(config["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        x = _rms(h, w[p + "input_layernorm.weight"], eps)
        q = _linear(x, w[p + "self_attn.q_proj.weight"], w.get(p + "self_attn.q_proj.bias"))
        k = _linear(x, w[p + "self_attn.k_proj.weight"], w.get(p + "self_attn.k_proj.bias"))
        v = _linear(x, w[p + "self_attn.v_proj.weight"], w.get(p + "self_attn.v_proj.bias"))
        _rope(q, heads, D, freqs)
        _rope(k, kv_heads, D, freqs)
        ctx = np.zeros((n, heads * D))
        for hq in range(heads):
            hk = hq // G
            for i in range(n):
                last = n - 1 if attend_to_future else i
                keys = [j for j in range(last + 1) if window is None or i - j < window]
                scores = [
                    sum(q[i, hq * D + d] * k[j, hk * D + d] for d in range(D)) / math.sqrt(D) for j in keys
                ]
                top = max(scores)
                weights = [math.exp(s - top) for s in scores]
                total = sum(weights)
                for d in range(D):
                    ctx[i, hq * D + d] = sum(wt * v[j, hk * D + d] for wt, j in zip(weights, keys)) / total
        mid = h + _linear(ctx, w[p + "self_attn.o_proj.weight"], w.get(p + "self_attn.o_proj.bias"))
        x2 = _rms(mid, w[p + "post_attention_layernorm.weight"], eps)
        gate = _linear(x2, w[p + "mlp.gate_proj.weight"], w.get(p + "mlp.gate_proj.bias"))
        up = _linear(x2, w[p + "mlp.up_proj.weight"], w.get(p + "mlp.up_proj.bias"))
        act = gate / (1 + np.exp(-gate)) * up
        h = mid + _linear(act, w[p + "mlp.down_proj.weight"], w.get(p + "mlp.down_proj.bias"))
        out.append(h)
    return out
