"""A checkpoint's `config.json`, parsed once into a checked `ModelConfig`.

Three Hugging Face families share one decoder here (RMSNorm, RoPE, grouped-query attention,
SwiGLU MLP); they differ only in what the config switches:

| family  | q/k/v bias         | o_proj bias        | MLP bias   | sliding window            |
|---------|--------------------|--------------------|------------|---------------------------|
| qwen2   | always             | never              | never      | refused when enabled      |
| llama   | `attention_bias`   | `attention_bias`   | `mlp_bias` | none                      |
| mistral | never              | never              | never      | `sliding_window` (a mask) |

RoPE: `rope_theta`, and `rope_scaling` of type `llama3` (or none / `default`); every other
scaling type is refused. transformers 5 writes these inside `rope_parameters`; both spellings
are read.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .errors import ExtractorError

SUPPORTED_MODEL_TYPES: tuple[str, ...] = ("qwen2", "llama", "mistral")
"""`model_type` values this extractor runs."""


@dataclass(frozen=True)
class Llama3RopeScaling:
    """Llama 3.1's frequency scaling (`rope_scaling.rope_type == "llama3"`)."""

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int


@dataclass(frozen=True)
class ModelConfig:
    """What the forward pass needs to know about a checkpoint."""

    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: Llama3RopeScaling | None
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool
    sliding_window: int | None
    """Keys a query sees: positions j with i - W < j <= i; None = all earlier positions."""
    tie_word_embeddings: bool

    @property
    def q_size(self) -> int:
        """Width of the query projection (heads × head_dim)."""
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        """Width of each of the key and value projections."""
        return self.num_kv_heads * self.head_dim


def _refuse(message: str) -> ExtractorError:
    return ExtractorError("MODEL", f"config.json: {message}")


def _positive_int(raw: Mapping[str, Any], key: str, default: int | None = None) -> int:
    value = raw.get(key, default)
    if value is None:
        raise _refuse(f"{key} is missing")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _refuse(f"{key} must be a positive integer, got {value!r}")
    return value


def _positive_float(raw: Mapping[str, Any], key: str, default: float | None = None) -> float:
    value = raw.get(key, default)
    if value is None:
        raise _refuse(f"{key} is missing")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _refuse(f"{key} must be a number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise _refuse(f"{key} must be a positive finite number, got {value!r}")
    return float(value)


def _flag(raw: Mapping[str, Any], key: str) -> bool:
    value = raw.get(key, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _refuse(f"{key} must be true or false, got {value!r}")
    return value


def _rope(raw: Mapping[str, Any]) -> tuple[float, Llama3RopeScaling | None]:
    """(`rope_theta`, scaling) from `rope_theta` + `rope_scaling` or transformers 5's `rope_parameters`."""
    params: Any = raw.get("rope_parameters")
    if params is not None:
        if not isinstance(params, dict):
            raise _refuse(f"rope_parameters must be an object, got {params!r}")
        if params and all(isinstance(v, dict) for v in params.values()):
            raise _refuse("per-layer-type rope_parameters are not supported")
    scaling: Any = raw.get("rope_scaling")
    if scaling is None:
        scaling = params
    theta_holder = params if params is not None and "rope_theta" in params else raw
    theta = _positive_float(theta_holder, "rope_theta", 10000.0)
    if scaling is None:
        return theta, None
    if not isinstance(scaling, dict):
        raise _refuse(f"rope_scaling must be an object or null, got {scaling!r}")
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind in (None, "default"):
        return theta, None
    if kind != "llama3":
        raise _refuse(f"rope_scaling type {kind!r} is not supported (supported: llama3, or none)")
    low = _positive_float(scaling, "low_freq_factor")
    high = _positive_float(scaling, "high_freq_factor")
    if high <= low:
        raise _refuse(f"rope_scaling: high_freq_factor ({high}) must exceed low_freq_factor ({low})")
    return theta, Llama3RopeScaling(
        factor=_positive_float(scaling, "factor"),
        low_freq_factor=low,
        high_freq_factor=high,
        original_max_position_embeddings=_positive_int(scaling, "original_max_position_embeddings"),
    )


def _sliding_window(raw: Mapping[str, Any], model_type: str) -> int | None:
    layer_types = raw.get("layer_types")
    sliding_layers = isinstance(layer_types, list) and "sliding_attention" in layer_types
    if model_type == "qwen2":
        if _flag(raw, "use_sliding_window") or sliding_layers:
            raise _refuse("qwen2 with use_sliding_window=true is not supported (per-layer windows)")
        return None
    if model_type == "mistral":
        if isinstance(layer_types, list) and sliding_layers and "full_attention" in layer_types:
            raise _refuse("mistral with both full and sliding layers is not supported")
        # transformers' MistralConfig defaults to 4096 when the key is absent; null means none.
        if "sliding_window" in raw and raw["sliding_window"] is None:
            return None
        return _positive_int(raw, "sliding_window", 4096)
    if sliding_layers:
        raise _refuse(f"{model_type} with sliding-window layers is not supported")
    return None


def parse_config(raw: Mapping[str, Any]) -> ModelConfig:
    """Checks a parsed `config.json`. Fails with `ExtractorError("MODEL")` naming the key and the rule."""
    model_type = raw.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise _refuse(
            f"unsupported model_type {model_type!r} (supported: {', '.join(SUPPORTED_MODEL_TYPES)})"
        )
    act = raw.get("hidden_act", "silu")
    if act not in ("silu", "swish"):
        raise _refuse(f"hidden_act {act!r} is not supported (the SwiGLU MLP needs silu)")
    hidden = _positive_int(raw, "hidden_size")
    heads = _positive_int(raw, "num_attention_heads")
    kv_heads = _positive_int(raw, "num_key_value_heads", heads)
    if heads % kv_heads != 0:
        raise _refuse(
            f"num_attention_heads ({heads}) must be a multiple of num_key_value_heads ({kv_heads})"
        )
    if raw.get("head_dim") is not None:
        head_dim = _positive_int(raw, "head_dim")
    elif hidden % heads != 0:
        raise _refuse(
            f"hidden_size ({hidden}) must be a multiple of num_attention_heads ({heads}) when head_dim is absent"
        )
    else:
        head_dim = hidden // heads
    if head_dim % 2 != 0:
        raise _refuse(f"head_dim ({head_dim}) must be even for rotary embeddings")
    partial = raw.get("partial_rotary_factor", 1.0)
    if partial not in (None, 1, 1.0):
        raise _refuse(f"partial_rotary_factor {partial!r} is not supported (only 1.0)")
    theta, scaling = _rope(raw)
    attention_bias = model_type == "llama" and _flag(raw, "attention_bias")
    return ModelConfig(
        model_type=model_type,
        vocab_size=_positive_int(raw, "vocab_size"),
        hidden_size=hidden,
        intermediate_size=_positive_int(raw, "intermediate_size"),
        num_layers=_positive_int(raw, "num_hidden_layers"),
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        rms_norm_eps=_positive_float(raw, "rms_norm_eps", 1e-6),
        rope_theta=theta,
        rope_scaling=scaling,
        qkv_bias=model_type == "qwen2" or attention_bias,
        o_bias=attention_bias,
        mlp_bias=model_type == "llama" and _flag(raw, "mlp_bias"),
        sliding_window=_sliding_window(raw, model_type),
        tie_word_embeddings=_flag(raw, "tie_word_embeddings"),
    )


def load_config(model_dir: Path) -> ModelConfig:
    """Reads and checks `model_dir/config.json`."""
    path = model_dir / "config.json"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ExtractorError("MODEL", f"cannot read {path}: {e.strerror or e}") from e
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise ExtractorError("MODEL", f"{path} is not JSON: {e}") from e
    if not isinstance(raw, dict):
        raise ExtractorError("MODEL", f"{path} must hold a JSON object")
    return parse_config(raw)
