"""Tiny random checkpoints written as real Hugging Face folders (config.json + safetensors).

Has its own small safetensors writer (the package only reads), so a round trip checks the
reader against an independent writer.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np

TENSOR_DTYPES = {"F32": "<f4", "F16": "<f2", "I32": "<i4", "BF16": "<u2"}


def float32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """Rounds float32 to bfloat16 (nearest, ties to even) and returns the bit patterns."""
    bits = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def bf16_bits_to_float64(bits: np.ndarray) -> np.ndarray:
    """The exact value of bfloat16 bit patterns."""
    return (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def write_safetensors(path: Path, tensors: dict[str, tuple[str, np.ndarray]], metadata: dict[str, str] | None = None) -> None:
    """Writes `{name: (dtype, array)}`; for BF16 the array holds the uint16 bit patterns."""
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = metadata
    blobs = []
    offset = 0
    for name, (dtype, array) in tensors.items():
        data = np.ascontiguousarray(array, dtype=TENSOR_DTYPES[dtype]).tobytes()
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


def tiny_config(model_type: str = "qwen2", **overrides: Any) -> dict[str, Any]:
    """A small config.json of a family: hidden 32, 3 layers, 4 query / 2 key-value heads."""
    config: dict[str, Any] = {
        "architectures": ["X"],
        "model_type": model_type,
        "hidden_act": "silu",
        "hidden_size": 32,
        "intermediate_size": 48,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 50,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "max_position_embeddings": 512,
        "tie_word_embeddings": True,
    }
    if model_type == "mistral":
        config["sliding_window"] = None
    config.update(overrides)
    return config


def hf_weight_shapes(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Hugging Face names and shapes of a config's weights (biases per family)."""
    H = config["hidden_size"]
    heads = config["num_attention_heads"]
    kv = config.get("num_key_value_heads", heads)
    D = config.get("head_dim") or H // heads
    I = config["intermediate_size"]
    qkv_bias = config["model_type"] == "qwen2" or config.get("attention_bias", False)
    o_bias = config["model_type"] == "llama" and config.get("attention_bias", False)
    mlp_bias = config["model_type"] == "llama" and config.get("mlp_bias", False)
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (config["vocab_size"], H)}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes[p + "input_layernorm.weight"] = (H,)
        shapes[p + "self_attn.q_proj.weight"] = (heads * D, H)
        shapes[p + "self_attn.k_proj.weight"] = (kv * D, H)
        shapes[p + "self_attn.v_proj.weight"] = (kv * D, H)
        shapes[p + "self_attn.o_proj.weight"] = (H, heads * D)
        if qkv_bias:
            shapes[p + "self_attn.q_proj.bias"] = (heads * D,)
            shapes[p + "self_attn.k_proj.bias"] = (kv * D,)
            shapes[p + "self_attn.v_proj.bias"] = (kv * D,)
        if o_bias:
            shapes[p + "self_attn.o_proj.bias"] = (H,)
        shapes[p + "post_attention_layernorm.weight"] = (H,)
        shapes[p + "mlp.gate_proj.weight"] = (I, H)
        shapes[p + "mlp.up_proj.weight"] = (I, H)
        shapes[p + "mlp.down_proj.weight"] = (H, I)
        if mlp_bias:
            shapes[p + "mlp.gate_proj.bias"] = (I,)
            shapes[p + "mlp.up_proj.bias"] = (I,)
            shapes[p + "mlp.down_proj.bias"] = (H,)
    shapes["model.norm.weight"] = (H,)
    return shapes


def random_weights(config: dict[str, Any], seed: int) -> dict[str, np.ndarray]:
    """float32 weights: linear uniform with variance 1/fan_in, biases ±0.5, norms 1±0.2, embeddings variance 1."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for name, shape in hf_weight_shapes(config).items():
        if name.endswith("norm.weight"):
            w = 1 + rng.uniform(-0.2, 0.2, shape)
        elif name.endswith(".bias"):
            w = rng.uniform(-0.5, 0.5, shape)
        elif name == "model.embed_tokens.weight":
            w = rng.uniform(-np.sqrt(3), np.sqrt(3), shape)
        else:
            bound = np.sqrt(3 / shape[-1])
            w = rng.uniform(-bound, bound, shape)
        out[name] = w.astype(np.float32)
    return out


def write_model(
    folder: Path,
    config: dict[str, Any],
    seed: int = 0,
    dtype: str = "F32",
    shards: int = 1,
    drop: tuple[str, ...] = (),
) -> dict[str, np.ndarray]:
    """Writes config.json and the weights (in `shards` files + index when > 1).

    Returns the weights as float64 exactly as stored (after rounding to F16/BF16), for references.
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    weights = random_weights(config, seed)
    stored: dict[str, tuple[str, np.ndarray]] = {}
    exact: dict[str, np.ndarray] = {}
    for name, w in weights.items():
        if dtype == "BF16":
            bits = float32_to_bf16_bits(w)
            stored[name] = ("BF16", bits)
            exact[name] = bf16_bits_to_float64(bits)
        elif dtype == "F16":
            h = w.astype(np.float16)
            stored[name] = ("F16", h)
            exact[name] = h.astype(np.float64)
        else:
            stored[name] = ("F32", w)
            exact[name] = w.astype(np.float64)
    names = [n for n in stored if n not in drop]
    if shards == 1:
        write_safetensors(folder / "model.safetensors", {n: stored[n] for n in names})
        return exact
    weight_map: dict[str, str] = {}
    for s in range(shards):
        file = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = names[s::shards]
        write_safetensors(folder / file, {n: stored[n] for n in part})
        weight_map.update({n: file for n in part})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return exact
