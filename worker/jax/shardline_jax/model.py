"""The decoder's forward pass, written once against an array namespace.

`Ops.xp` is `numpy` or `jax.numpy`; the few things the two do differently (a loop over layers,
a matmul that accumulates into float32, an optional fused attention kernel) sit in `Ops`, so
numpy runs the very functions JAX traces and compiles. Semantics are Hugging Face's
`Qwen2DecoderLayer` / `LlamaDecoderLayer` / `MistralDecoderLayer`, including where they round:

- RMSNorm in float32, the normalised value cast back to the compute dtype before the weight
  multiplies it (`weight * x.to(input_dtype)`);
- RoPE with `rotate_half`, inverse frequencies in float32 as transformers computes them,
  positions 0..S-1 (padding is on the right, so every real token has its own index);
- attention scores and softmax in float32, probabilities cast to the compute dtype before they
  weight V; grouped-query heads: query head h reads key/value head h // (heads / kv_heads);
- SwiGLU: `down(silu(gate(x)) * up(x))`, SiLU computed in float32;
- residual adds in the compute dtype.

Masking is causal only (plus Mistral's window). With right padding that is exact for every
real token: query i < len sees keys j <= i < len, never a pad. Pad rows compute garbage that
is never returned. So a padded batch gives each sequence exactly what it gives alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .config import ModelConfig

Array = Any
"""A numpy or jax array."""

_MASKED = -1e30
"""Score of a masked key: exp() of it minus any real score is exactly 0 in float32."""


@dataclass(frozen=True)
class Ops:
    """What differs between array libraries. Build with `numpy_ops` or `devices.jax_ops`."""

    xp: Any
    """`numpy` or `jax.numpy`."""
    compute_dtype: Any
    """Weights and activations (float32, or bfloat16 with JAX)."""
    output_dtype: Any
    """Returned rows (float16 or float32)."""
    scan: Callable[[Callable[[Array, Any], tuple[Array, Array]], Array, Any], tuple[Array, Array]]
    """`(body, carry, xs) -> (carry, stacked ys)` over the leading axis of every leaf of `xs`."""
    matmul_f32: Callable[[Array, Array], Array]
    """`a @ b` accumulated and returned in float32."""
    fused_attention: Callable[[Array, Array, Array, float], Array] | None = None
    """Optional causal attention kernel `(q [B,S,N,D], k, v [B,S,K,D], scale) -> [B,S,N,D]`."""


def _numpy_scan(body: Callable[[Array, Any], tuple[Array, Array]], carry: Array, xs: Any) -> tuple[Array, Array]:
    count = len(next(iter(xs.values())))
    ys = []
    for i in range(count):
        carry, y = body(carry, {k: v[i] for k, v in xs.items()})
        ys.append(y)
    return carry, np.stack(ys)


def numpy_ops(output_dtype: str) -> Ops:
    """numpy, float32 compute (numpy has no bfloat16 arithmetic)."""
    return Ops(
        xp=np,
        compute_dtype=np.float32,
        output_dtype=np.dtype(output_dtype),
        scan=_numpy_scan,
        matmul_f32=lambda a, b: np.matmul(a, b, dtype=np.float32),
    )


def rope_inv_freq(cfg: ModelConfig) -> np.ndarray:
    """Inverse frequencies `[head_dim / 2]` in float32, as transformers computes them (llama3 scaling included)."""
    exponents = np.arange(0, cfg.head_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(cfg.head_dim)
    inv = np.float32(1.0) / (np.float32(cfg.rope_theta) ** exponents)
    s = cfg.rope_scaling
    if s is None:
        return inv.astype(np.float32)
    low_wavelen = s.original_max_position_embeddings / s.low_freq_factor
    high_wavelen = s.original_max_position_embeddings / s.high_freq_factor
    wavelen = np.float32(2 * math.pi) / inv
    scaled = np.where(wavelen > low_wavelen, inv / np.float32(s.factor), inv)
    smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) / (
        s.high_freq_factor - s.low_freq_factor
    )
    smoothed = (1 - smooth) * scaled / np.float32(s.factor) + smooth * scaled
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return np.where(medium, smoothed, scaled).astype(np.float32)


def rope_tables(ops: Ops, inv_freq: np.ndarray, seq_len: int) -> tuple[Array, Array]:
    """`cos`, `sin` of `[seq_len, head_dim]`, in the compute dtype."""
    xp = ops.xp
    freqs = xp.arange(seq_len, dtype=xp.float32)[:, None] * xp.asarray(inv_freq)[None, :]
    emb = xp.concatenate([freqs, freqs], axis=-1)
    return xp.cos(emb).astype(ops.compute_dtype), xp.sin(emb).astype(ops.compute_dtype)


def apply_rope(ops: Ops, x: Array, cos: Array, sin: Array) -> Array:
    """Rotates `x [B, S, heads, D]` by position: `x·cos + rotate_half(x)·sin`."""
    half = x.shape[-1] // 2
    rotated = ops.xp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos[None, :, None, :] + rotated * sin[None, :, None, :]


def rms_norm(ops: Ops, x: Array, weight: Array, eps: float) -> Array:
    """`weight * (x / rms(x))`, the statistic in float32."""
    xp = ops.xp
    x32 = x.astype(xp.float32)
    inv = 1.0 / xp.sqrt(xp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return weight * (x32 * inv).astype(ops.compute_dtype)


def linear(ops: Ops, x: Array, w: Array, b: Array | None) -> Array:
    """`x @ w.T (+ b)` over the last axis; `w` is `[out, in]` (Hugging Face layout)."""
    flat = x.reshape(-1, x.shape[-1])
    if b is None:
        y = ops.xp.matmul(flat, w.T)
    else:
        # With a bias the sum is taken before rounding, as cuBLAS's fused bias epilogue does.
        y = (ops.matmul_f32(flat, w.T) + b.astype(ops.xp.float32)).astype(ops.compute_dtype)
    return y.reshape(*x.shape[:-1], w.shape[0])


def attention(ops: Ops, cfg: ModelConfig, q: Array, k: Array, v: Array) -> Array:
    """Causal grouped-query attention: `q [B,S,N,D]`, `k`/`v` `[B,S,K,D]` → `[B,S,N*D]`."""
    xp = ops.xp
    B, S, N, D = q.shape
    K = cfg.num_kv_heads
    scale = cfg.head_dim**-0.5
    if ops.fused_attention is not None and cfg.sliding_window is None:
        return ops.fused_attention(q, k, v, scale).reshape(B, S, N * D)
    G = N // K
    q5 = q.reshape(B, S, K, G, D).transpose(0, 2, 3, 1, 4)  # [B, K, G, S, D]
    kt = k.transpose(0, 2, 3, 1)[:, :, None]  # [B, K, 1, D, S]
    scores = ops.matmul_f32(q5, kt) * scale  # [B, K, G, S, S]
    i = xp.arange(S)[:, None]
    j = xp.arange(S)[None, :]
    allowed = j <= i
    if cfg.sliding_window is not None:
        allowed = allowed & (i - j < cfg.sliding_window)
    scores = xp.where(allowed, scores, xp.float32(_MASKED))
    probs = xp.exp(scores - xp.max(scores, axis=-1, keepdims=True))
    probs = probs / xp.sum(probs, axis=-1, keepdims=True)
    ctx = xp.matmul(probs.astype(ops.compute_dtype), v.transpose(0, 2, 1, 3)[:, :, None])
    return ctx.transpose(0, 3, 1, 2, 4).reshape(B, S, N * D)


def silu_f32(ops: Ops, x: Array) -> Array:
    """SiLU in float32 (sigmoid as 0.5·(1 + tanh(x/2)): no overflow for very negative x)."""
    x32 = x.astype(ops.xp.float32)
    return x32 * (0.5 + 0.5 * ops.xp.tanh(0.5 * x32))


def decoder_layer(ops: Ops, cfg: ModelConfig, h: Array, p: dict[str, Array], cos: Array, sin: Array) -> Array:
    """One decoder layer on the residual stream `h [B, S, H]`; `p` holds this layer's weights."""
    B, S, _ = h.shape
    x = rms_norm(ops, h, p["ln1"], cfg.rms_norm_eps)
    q = linear(ops, x, p["wq"], p.get("bq")).reshape(B, S, cfg.num_heads, cfg.head_dim)
    k = linear(ops, x, p["wk"], p.get("bk")).reshape(B, S, cfg.num_kv_heads, cfg.head_dim)
    v = linear(ops, x, p["wv"], p.get("bv")).reshape(B, S, cfg.num_kv_heads, cfg.head_dim)
    q = apply_rope(ops, q, cos, sin)
    k = apply_rope(ops, k, cos, sin)
    h = h + linear(ops, attention(ops, cfg, q, k, v), p["wo"], p.get("bo"))
    x = rms_norm(ops, h, p["ln2"], cfg.rms_norm_eps)
    gate = linear(ops, x, p["wg"], p.get("bg"))
    up = linear(ops, x, p["wu"], p.get("bu"))
    act = silu_f32(ops, gate).astype(ops.compute_dtype) * up
    return h + linear(ops, act, p["wd"], p.get("bd"))


def forward(
    ops: Ops,
    cfg: ModelConfig,
    layers: tuple[int, ...],
    inv_freq: np.ndarray,
    params: dict[str, Any],
    tokens: Array,
) -> Array:
    """Residual streams `[len(layers), B, S, H]` (output dtype) after each of `layers`.

    `tokens` is `[B, S]` int32, right-padded; `params["layers"]` holds layers `0..max(layers)`
    stacked (see `weights.py`). Entry `i` is the stream after layer `layers[i]`: Hugging Face's
    `hidden_states[layers[i] + 1]`, before the final norm.
    """
    xp = ops.xp
    h = xp.take(params["embed"], tokens, axis=0)
    cos, sin = rope_tables(ops, inv_freq, tokens.shape[1])

    def body(carry: Array, p: dict[str, Array]) -> tuple[Array, Array]:
        out = decoder_layer(ops, cfg, carry, p, cos, sin)
        return out, out.astype(ops.output_dtype)

    _, ys = ops.scan(body, h, params["layers"])
    if layers != tuple(range(ys.shape[0])):
        ys = xp.take(ys, xp.asarray(layers, dtype=xp.int32), axis=0)
    return ys


def gather_rows(ops: Ops, hidden: Array, index: Array) -> Array:
    """Rows `index` (into the flattened `B·S` positions) of `hidden [L, B, S, H]` → `[L, R, H]`."""
    L, B, S, H = hidden.shape
    return ops.xp.take(hidden.reshape(L, B * S, H), index, axis=1)
