"""The safetensors reader against an independent writer, checkpoint layouts, the weights hash."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from shardline_jax.config import parse_config
from shardline_jax.errors import ExtractorError
from shardline_jax.safetensors_io import SafetensorsFile
from shardline_jax.weights import checkpoint_files, load_params, weights_sha256
from tinymodel import float32_to_bf16_bits, tiny_config, write_model, write_safetensors


def test_round_trip_f32_f16_bf16_i32(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    f32 = rng.standard_normal((3, 5)).astype(np.float32)
    f16 = rng.standard_normal((7,)).astype(np.float16)
    bf16_source = np.array([1.0, -2.5, 3.140625, 1e-3, -65504.0, 0.0], dtype=np.float32)
    i32 = np.arange(-4, 8, dtype=np.int32).reshape(2, 2, 3)
    path = tmp_path / "t.safetensors"
    write_safetensors(
        path,
        {"a": ("F32", f32), "b": ("F16", f16), "c": ("BF16", float32_to_bf16_bits(bf16_source)), "d": ("I32", i32)},
        metadata={"format": "pt"},
    )
    f = SafetensorsFile(path)
    assert f.metadata == {"format": "pt"}
    assert {n: (t.dtype, t.shape) for n, t in f.tensors.items()} == {
        "a": ("F32", (3, 5)),
        "b": ("F16", (7,)),
        "c": ("BF16", (6,)),
        "d": ("I32", (2, 2, 3)),
    }
    assert np.array_equal(f.raw("a"), f32) and np.array_equal(f.float32("a"), f32)
    assert f.raw("b").dtype == np.float16 and np.array_equal(f.raw("b"), f16)
    assert np.array_equal(f.float32("b"), f16.astype(np.float32))
    assert np.array_equal(f.raw("d"), i32)
    # bfloat16: the bit patterns as stored, and their exact values (hand-checked).
    assert [hex(v) for v in f.raw("c")[:3]] == ["0x3f80", "0xc020", "0x4049"]
    assert f.float32("c").tolist()[:3] == [1.0, -2.5, 3.140625]
    assert f.float32("c")[3] == np.float32(0.00099945068359375)  # 1e-3 rounded to 8 bits of mantissa
    assert f.float32("c")[4] == -65536.0  # -65504 rounds up in magnitude in bf16


def _raw_file(path: Path, header: dict[str, object], data: bytes) -> None:
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


def test_rejects_broken_files_with_the_path(tmp_path: Path) -> None:
    cases = {
        "short.safetensors": b"\x01\x02",
        "huge.safetensors": struct.pack("<Q", 1 << 40) + b"{}",
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
    _raw_file(tmp_path / "past.safetensors", {"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8)
    _raw_file(tmp_path / "dtype.safetensors", {"x": {"dtype": "F8_E4M3", "shape": [1], "data_offsets": [0, 1]}}, b"\0")
    _raw_file(tmp_path / "size.safetensors", {"x": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8)
    expected = {
        "short.safetensors": "shorter than",
        "huge.safetensors": "does not fit",
        "past.safetensors": "do not hold",
        "dtype.safetensors": "unsupported dtype 'F8_E4M3'",
        "size.safetensors": "do not hold",
    }
    for name, words in expected.items():
        with pytest.raises(ExtractorError) as caught:
            SafetensorsFile(tmp_path / name)
        assert caught.value.code == "MODEL"
        assert name in caught.value.message and words in caught.value.message


def test_sharded_checkpoint_loads_like_one_file_and_hashes_its_bytes(tmp_path: Path) -> None:
    config = tiny_config("qwen2")
    cfg = parse_config(config)
    write_model(tmp_path / "one", config, seed=3)
    write_model(tmp_path / "three", config, seed=3, shards=3)
    one = load_params(checkpoint_files(tmp_path / "one"), cfg, 3, "float32")
    files = checkpoint_files(tmp_path / "three")
    assert [f.name for f in files] == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    three = load_params(files, cfg, 3, "float32")
    assert np.array_equal(one["embed"], three["embed"])
    assert one["layers"].keys() == three["layers"].keys() == {
        "ln1", "wq", "wk", "wv", "wo", "ln2", "wg", "wu", "wd", "bq", "bk", "bv"
    }
    for key in one["layers"]:
        assert np.array_equal(one["layers"][key], three["layers"][key])
    assert one["layers"]["wq"].shape == (3, 32, 32) and one["layers"]["wk"].shape == (3, 16, 32)
    # Only layers 0..n-1 are read when fewer are needed.
    assert load_params(files, cfg, 1, "float32")["layers"]["wd"].shape == (1, 32, 48)
    concatenated = b"".join(f.read_bytes() for f in files)
    assert weights_sha256(files) == hashlib.sha256(concatenated).hexdigest()
    assert weights_sha256(files) != weights_sha256(checkpoint_files(tmp_path / "one"))


def test_weights_from_bf16_and_f16_files_are_exact(tmp_path: Path) -> None:
    config = tiny_config("llama", attention_bias=True)
    cfg = parse_config(config)
    for dtype in ("BF16", "F16"):
        exact = write_model(tmp_path / dtype, config, seed=4, dtype=dtype)
        params = load_params(checkpoint_files(tmp_path / dtype), cfg, 3, "float32")
        assert np.array_equal(params["layers"]["bo"][2], exact["model.layers.2.self_attn.o_proj.bias"])
        assert np.array_equal(params["embed"], exact["model.embed_tokens.weight"])


def test_missing_and_misshapen_tensors_are_named(tmp_path: Path) -> None:
    config = tiny_config("qwen2")
    cfg = parse_config(config)
    write_model(tmp_path / "m", config, drop=("model.layers.1.mlp.up_proj.weight",))
    with pytest.raises(ExtractorError) as caught:
        load_params(checkpoint_files(tmp_path / "m"), cfg, 3, "float32")
    assert caught.value.code == "MODEL"
    assert caught.value.message == "missing tensor model.layers.1.mlp.up_proj.weight in the checkpoint"
    wrong = parse_config(tiny_config("qwen2", intermediate_size=40))
    with pytest.raises(ExtractorError) as caught:
        load_params(checkpoint_files(tmp_path / "m"), wrong, 1, "float32")
    assert "model.layers.0.mlp.gate_proj.weight has shape [48, 32], expected [40, 32]" in caught.value.message
    with pytest.raises(ExtractorError) as caught:
        checkpoint_files(tmp_path)
    assert "no model.safetensors or model.safetensors.index.json" in caught.value.message
