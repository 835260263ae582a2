"""config.json parsing for qwen2, llama and mistral, and the refusals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from shardline_jax.config import Llama3RopeScaling, load_config, parse_config
from shardline_jax.errors import ExtractorError
from tinymodel import tiny_config

QWEN25_05B: dict[str, Any] = {
    "architectures": ["Qwen2ForCausalLM"],
    "hidden_act": "silu",
    "hidden_size": 896,
    "intermediate_size": 4864,
    "max_position_embeddings": 32768,
    "max_window_layers": 21,
    "model_type": "qwen2",
    "num_attention_heads": 14,
    "num_hidden_layers": 24,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "sliding_window": 32768,
    "tie_word_embeddings": True,
    "use_sliding_window": False,
    "vocab_size": 151936,
}


def refusal(raw: dict[str, Any]) -> str:
    with pytest.raises(ExtractorError) as caught:
        parse_config(raw)
    assert caught.value.code == "MODEL"
    return caught.value.message


def test_qwen2_has_qkv_bias_only_and_derives_head_dim() -> None:
    cfg = parse_config(QWEN25_05B)
    assert (cfg.model_type, cfg.num_layers, cfg.hidden_size, cfg.vocab_size) == ("qwen2", 24, 896, 151936)
    assert (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim) == (14, 2, 64)
    assert (cfg.q_size, cfg.kv_size, cfg.intermediate_size) == (896, 128, 4864)
    assert (cfg.qkv_bias, cfg.o_bias, cfg.mlp_bias) == (True, False, False)
    assert cfg.rope_theta == 1e6 and cfg.rope_scaling is None
    assert cfg.sliding_window is None  # use_sliding_window is false
    assert cfg.tie_word_embeddings and cfg.rms_norm_eps == 1e-6


def test_llama_biases_follow_flags_head_dim_and_llama3_rope() -> None:
    raw = tiny_config(
        "llama",
        attention_bias=True,
        mlp_bias=True,
        head_dim=16,  # != hidden / heads (8)
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
    )
    cfg = parse_config(raw)
    assert (cfg.qkv_bias, cfg.o_bias, cfg.mlp_bias) == (True, True, True)
    assert (cfg.head_dim, cfg.q_size, cfg.kv_size) == (16, 64, 32)
    assert cfg.rope_scaling == Llama3RopeScaling(8.0, 1.0, 4.0, 8192)
    plain = parse_config(tiny_config("llama"))
    assert (plain.qkv_bias, plain.o_bias, plain.mlp_bias, plain.head_dim) == (False, False, False, 8)


def test_transformers5_rope_parameters_are_read() -> None:
    raw = tiny_config("llama")
    del raw["rope_theta"]
    raw["rope_parameters"] = {
        "rope_type": "llama3",
        "rope_theta": 500000.0,
        "factor": 32.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    cfg = parse_config(raw)
    assert cfg.rope_theta == 500000.0
    assert cfg.rope_scaling is not None and cfg.rope_scaling.factor == 32.0
    default = tiny_config("qwen2")
    del default["rope_theta"]
    default["rope_parameters"] = {"rope_type": "default", "rope_theta": 1000000.0}
    assert parse_config(default).rope_theta == 1e6
    assert parse_config(default).rope_scaling is None


def test_mistral_sliding_window_explicit_null_and_default() -> None:
    assert parse_config(tiny_config("mistral", sliding_window=4)).sliding_window == 4
    assert parse_config(tiny_config("mistral", sliding_window=None)).sliding_window is None
    absent = tiny_config("mistral")
    del absent["sliding_window"]
    assert parse_config(absent).sliding_window == 4096  # transformers' MistralConfig default
    cfg = parse_config(tiny_config("mistral", sliding_window=None))
    assert (cfg.qkv_bias, cfg.o_bias, cfg.mlp_bias) == (False, False, False)


def test_num_key_value_heads_defaults_to_heads() -> None:
    raw = tiny_config("llama")
    del raw["num_key_value_heads"]
    assert parse_config(raw).num_kv_heads == 4


def test_refuses_unknown_model_type() -> None:
    message = refusal(tiny_config("gpt2"))
    assert "unsupported model_type 'gpt2'" in message and "qwen2, llama, mistral" in message


def test_refuses_rope_scaling_types_other_than_llama3() -> None:
    for kind in ("yarn", "linear", "dynamic", "longrope"):
        message = refusal(tiny_config("llama", rope_scaling={"type": kind, "factor": 4.0}))
        assert f"rope_scaling type '{kind}' is not supported" in message
    assert "low_freq_factor is missing" in refusal(
        tiny_config("llama", rope_scaling={"rope_type": "llama3", "factor": 8.0})
    )


def test_refuses_inconsistent_heads() -> None:
    message = refusal(tiny_config("qwen2", num_attention_heads=4, num_key_value_heads=3))
    assert "num_attention_heads (4) must be a multiple of num_key_value_heads (3)" in message
    assert "must be a multiple of num_attention_heads" in refusal(
        tiny_config("llama", hidden_size=30, num_attention_heads=4)
    )
    assert "head_dim (5) must be even" in refusal(tiny_config("llama", head_dim=5))


def test_refuses_what_the_forward_does_not_do() -> None:
    assert "use_sliding_window=true" in refusal(tiny_config("qwen2", use_sliding_window=True))
    assert "hidden_act 'gelu'" in refusal(tiny_config("llama", hidden_act="gelu"))
    assert "partial_rotary_factor" in refusal(tiny_config("llama", partial_rotary_factor=0.5))
    missing = tiny_config("qwen2")
    del missing["intermediate_size"]
    assert "intermediate_size is missing" in refusal(missing)
    assert "vocab_size must be a positive integer" in refusal(tiny_config("qwen2", vocab_size=0))


def test_load_config_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ExtractorError) as caught:
        load_config(tmp_path)
    assert caught.value.code == "MODEL" and "config.json" in caught.value.message
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ExtractorError) as caught:
        load_config(tmp_path)
    assert "is not JSON" in caught.value.message
    (tmp_path / "config.json").write_text(json.dumps(QWEN25_05B))
    assert load_config(tmp_path).hidden_size == 896
