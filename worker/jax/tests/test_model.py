"""The forward pass (numpy): RoPE, GQA, masking, and whole models against the naive reference."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

import naive
from shardline_jax import model
from shardline_jax.backend import ForwardSpec, NumpyBackend
from shardline_jax.config import parse_config
from shardline_jax.extractor import Extractor, Limits
from shardline_jax.weights import checkpoint_files, load_params
from tinymodel import tiny_config, write_model

OPS = model.numpy_ops("float32")
LIMITS = Limits(max_batch_size=8, max_batch_tokens=4096, max_seq_length=256)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def test_rope_matches_a_hand_computed_rotation() -> None:
    # head_dim 4, theta 100: inverse frequencies 100^0 = 1 and 100^(-2/4) = 0.1.
    cfg = parse_config(tiny_config("llama", hidden_size=8, num_attention_heads=2, num_key_value_heads=2, rope_theta=100.0))
    inv = model.rope_inv_freq(cfg)
    assert inv.dtype == np.float32 and np.allclose(inv, [1.0, 0.1], rtol=1e-7)
    cos, sin = model.rope_tables(OPS, inv, 3)
    x = np.zeros((1, 3, 1, 4), dtype=np.float32)
    x[0, 2, 0] = [1.0, 2.0, 3.0, 4.0]  # position 2
    y = model.apply_rope(OPS, x, cos, sin)[0, 2, 0]
    # Pairs (0, 2) turn by 2·1 rad, pairs (1, 3) by 2·0.1 rad: [a·c − b·s, …, b·c + a·s].
    expected = [
        1 * math.cos(2) - 3 * math.sin(2),
        2 * math.cos(0.2) - 4 * math.sin(0.2),
        3 * math.cos(2) + 1 * math.sin(2),
        4 * math.cos(0.2) + 2 * math.sin(0.2),
    ]
    assert np.allclose(y, expected, atol=1e-6)
    assert np.array_equal(model.apply_rope(OPS, x, cos, sin)[0, 0], x[0, 0])  # position 0: no turn


def test_llama3_frequency_scaling_matches_the_formula() -> None:
    scaling = {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64,
    }
    config = tiny_config("llama", hidden_size=64, num_attention_heads=2, num_key_value_heads=1, rope_theta=500000.0, rope_scaling=scaling)
    got = model.rope_inv_freq(parse_config(config))
    plain = [500000.0 ** (-2 * j / 32) for j in range(16)]
    for j, f in enumerate(plain):
        wavelength = 2 * math.pi / f
        if wavelength < 64 / 4:
            want = f  # high frequency: kept
        elif wavelength > 64 / 1:
            want = f / 8  # low frequency: divided by the factor
        else:
            s = (64 / wavelength - 1) / (4 - 1)
            want = (1 - s) * f / 8 + s * f
        assert math.isclose(got[j], want, rel_tol=2e-6), (j, got[j], want)
    kinds = {"kept": 0, "scaled": 0, "smoothed": 0}
    for f in plain:
        wl = 2 * math.pi / f
        kinds["kept" if wl < 16 else "scaled" if wl > 64 else "smoothed"] += 1
    assert all(kinds.values()), kinds  # the case exercises all three branches


def _explicit_gqa(q: np.ndarray, k: np.ndarray, v: np.ndarray, window: int | None) -> np.ndarray:
    B, S, N, D = q.shape
    K = k.shape[2]
    out = np.zeros((B, S, N * D))
    for b in range(B):
        for h in range(N):
            kv = h // (N // K)
            for i in range(S):
                keys = [j for j in range(i + 1) if window is None or i - j < window]
                scores = np.array([q[b, i, h] @ k[b, j, kv] for j in keys], dtype=np.float64) / math.sqrt(D)
                p = np.exp(scores - scores.max())
                p /= p.sum()
                out[b, i, h * D : (h + 1) * D] = sum(pj * v[b, j, kv] for pj, j in zip(p, keys))
    return out


def test_grouped_query_attention_equals_a_per_head_loop() -> None:
    rng = np.random.default_rng(5)
    for heads, kv_heads, window in ((6, 2, None), (4, 4, None), (4, 1, None), (4, 2, 3)):
        config = tiny_config(
            "mistral", hidden_size=heads * 8, num_attention_heads=heads, num_key_value_heads=kv_heads, sliding_window=window
        )
        cfg = parse_config(config)
        q = rng.standard_normal((2, 7, heads, 8)).astype(np.float32)
        k = rng.standard_normal((2, 7, kv_heads, 8)).astype(np.float32)
        v = rng.standard_normal((2, 7, kv_heads, 8)).astype(np.float32)
        got = model.attention(OPS, cfg, q, k, v)
        assert np.allclose(got, _explicit_gqa(q, k, v, window), atol=2e-6), (heads, kv_heads, window)


def _tiny_extractor(folder: Path, config: dict[str, Any], **backend: Any) -> Extractor:
    cfg = parse_config(config)
    layers = tuple(range(cfg.num_layers))
    spec = ForwardSpec(cfg, layers, model.rope_inv_freq(cfg), "float32", "float32")
    params = load_params(checkpoint_files(folder), cfg, cfg.num_layers, "float32")
    return Extractor(spec, NumpyBackend(spec, params, **backend), LIMITS)


def _run(ex: Extractor, sequences: list[list[int]], positions: list[list[int]] | None = None) -> list[np.ndarray]:
    arrays = {
        "token_ids": np.concatenate([np.asarray(s, dtype=np.int32) for s in sequences]),
        "lengths": np.array([len(s) for s in sequences], dtype=np.int32),
    }
    if positions is not None:
        arrays["positions"] = np.concatenate([np.asarray(p, dtype=np.int32) for p in positions]).astype(np.int32)
        arrays["position_counts"] = np.array([len(p) for p in positions], dtype=np.int32)
    return ex.submit(arrays)().rows


def test_a_padded_batch_equals_each_sequence_alone(tmp_path: Path) -> None:
    config = tiny_config("qwen2")
    write_model(tmp_path, config, seed=6)
    ex = _tiny_extractor(tmp_path, config)
    rng = np.random.default_rng(6)
    seqs = [rng.integers(0, 50, n).tolist() for n in (9, 2, 5)]
    batch = _run(ex, seqs)
    alone = [_run(ex, [s]) for s in seqs]
    for layer in range(3):
        ref = np.concatenate([a[layer] for a in alone])
        # Other shapes sum in another order inside BLAS: a few float32 ulps (measured ≤ 1.1e-6).
        assert np.abs(batch[layer] - ref).max() <= 2e-6 * rms(ref)
    # Same shapes, bit for bit: a forward with random junk in the pad slots gives the real rows
    # of a clean one, so pads are never attended to.
    cfg = ex.cfg
    tokens = np.zeros((3, 9), dtype=np.int32)
    junk = rng.integers(0, 50, (3, 9)).astype(np.int32)
    for k, s in enumerate(seqs):
        tokens[k, : len(s)] = s
        junk[k, : len(s)] = s
    params = load_params(checkpoint_files(tmp_path), cfg, 3, "float32")
    clean = model.forward(OPS, cfg, (0, 1, 2), model.rope_inv_freq(cfg), params, tokens)
    dirty = model.forward(OPS, cfg, (0, 1, 2), model.rope_inv_freq(cfg), params, junk)
    for k, s in enumerate(seqs):
        assert np.array_equal(clean[:, k, : len(s)], dirty[:, k, : len(s)])
    assert not np.allclose(clean[:, 1, 2:], dirty[:, 1, 2:])  # the pad rows themselves did change


def _check_against_naive(folder: Path, config: dict[str, Any], weights: dict[str, np.ndarray], seqs: list[list[int]]) -> None:
    ex = _tiny_extractor(folder, config)
    rows = _run(ex, seqs)
    starts = np.cumsum([0] + [len(s) for s in seqs])
    for k, s in enumerate(seqs):
        ref = naive.residuals(config, weights, s)
        for layer in range(config["num_hidden_layers"]):
            got = rows[layer][starts[k] : starts[k + 1]]
            err = np.abs(got - ref[layer]).max()
            assert err <= 1e-5 * rms(ref[layer]), (config["model_type"], k, layer, err, rms(ref[layer]))


def test_qwen2_forward_matches_the_naive_reference(tmp_path: Path) -> None:
    config = tiny_config("qwen2", rope_theta=1e6)
    weights = write_model(tmp_path, config, seed=7, shards=2)
    _check_against_naive(tmp_path, config, weights, [[3, 14, 15, 9, 26, 5, 35, 8, 9, 7, 9, 3], [2, 7], [1]])


def test_llama_forward_with_biases_head_dim_and_llama3_rope_matches(tmp_path: Path) -> None:
    scaling = {
        "rope_type": "llama3",
        "factor": 4.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 32,
    }
    config = tiny_config("llama", attention_bias=True, mlp_bias=True, head_dim=16, rope_theta=500.0, rope_scaling=scaling)
    weights = write_model(tmp_path, config, seed=8, dtype="BF16")
    rng = np.random.default_rng(8)
    _check_against_naive(tmp_path, config, weights, [rng.integers(0, 50, 20).tolist(), [4, 4, 4]])


def test_mistral_forward_with_a_sliding_window_matches(tmp_path: Path) -> None:
    config = tiny_config("mistral", sliding_window=3, rms_norm_eps=0.05)  # an eps large enough to matter
    weights = write_model(tmp_path, config, seed=9, dtype="F16")
    _check_against_naive(tmp_path, config, weights, [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [11, 12]])


def test_the_reference_comparison_catches_a_broken_mask(tmp_path: Path) -> None:
    config = tiny_config("qwen2")
    weights = write_model(tmp_path, config, seed=10)
    seq = [5, 6, 7, 8, 9, 10]
    rows = _run(_tiny_extractor(tmp_path, config), [seq])
    broken = naive.residuals(config, weights, seq, attend_to_future=True)
    assert np.abs(rows[2] - broken[2]).max() > 1e-2 * rms(broken[2])


def test_shards_buckets_and_positions_give_the_same_rows(tmp_path: Path) -> None:
    """The host logic JAX uses (padding to buckets, per-device row indices) run with numpy shards."""
    config = tiny_config("qwen2")
    write_model(tmp_path, config, seed=11)
    plain = _tiny_extractor(tmp_path, config)
    sharded = _tiny_extractor(tmp_path, config, num_shards=3, bucketed=True)
    rng = np.random.default_rng(11)
    seqs = [rng.integers(0, 50, n).tolist() for n in (40, 3, 17, 1, 33)]
    full = _run(plain, seqs)
    got = _run(sharded, seqs)
    for a, b in zip(full, got):
        assert a.shape == b.shape and np.allclose(a, b, rtol=0, atol=1e-5)
    positions: list[list[int]] = [[0, 39], [], [16], [0], [1, 2, 3, 32]]
    picked = _run(sharded, seqs, positions)
    starts = np.cumsum([0] + [len(s) for s in seqs])
    want = np.concatenate([starts[k] + np.asarray(p, dtype=np.int64) for k, p in enumerate(positions)])
    for layer in range(3):
        assert np.allclose(picked[layer], full[layer][want], rtol=0, atol=1e-5)
