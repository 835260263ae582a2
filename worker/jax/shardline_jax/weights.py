"""Loading a Hugging Face checkpoint folder into the forward pass's parameter tree.

Layouts: `model.safetensors`, or shards listed by `model.safetensors.index.json`
(`{"weight_map": {tensor: file}}`). Names are Hugging Face's (`model.layers.{i}.self_attn.q_proj.weight`,
`[out, in]`); a checkpoint saved from the bare model (no `model.` prefix) is read too. Only the
embedding and layers `0..last` are loaded: the final norm and the LM head are never needed,
since extraction stops at the residual stream before the final norm.

Per-layer tensors are stacked on a leading layer axis (the forward scans over it):

    embed [V, H]; layers: ln1 [L, H], wq [L, q, H], wk/wv [L, kv, H], wo [L, H, q], ln2 [L, H],
    wg/wu [L, I, H], wd [L, H, I], and biases bq [L, q], bk/bv [L, kv], bo [L, H],
    bg/bu [L, I], bd [L, H] where the config has them.

The weights hash (`weights_sha256`) is SHA-256 over the bytes of the checkpoint's safetensors
files concatenated in ascending file-name order (`cat $(ls *.safetensors | LC_ALL=C sort) |
sha256sum` for a one-file or fully listed folder): the content, not just the shapes, so two
fine-tunes of one base never share a hash. It runs on a thread while the weights load
(hashlib releases the GIL), so it costs little wall time.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .config import ModelConfig
from .errors import ExtractorError
from .safetensors_io import SafetensorsFile

Params = dict[str, Any]
"""`{"embed": array, "layers": {name: stacked array}}`; numpy on the host, device arrays after placement."""

_HASH_CHUNK_BYTES = 16 * 1024 * 1024


def checkpoint_files(model_dir: Path) -> list[Path]:
    """The safetensors files of a checkpoint folder, ascending by name."""
    index_path = model_dir / "model.safetensors.index.json"
    if index_path.is_file():
        try:
            index = json.loads(index_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ExtractorError("MODEL", f"cannot read {index_path}: {e}") from e
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise ExtractorError("MODEL", f"{index_path} has no weight_map of tensor → file")
        names = sorted(set(weight_map.values()))
        for name in names:
            if "/" in name or "\\" in name or name in ("", ".", ".."):
                raise ExtractorError("MODEL", f"{index_path} names a file outside the folder: {name!r}")
        files = [model_dir / n for n in names]
    elif (model_dir / "model.safetensors").is_file():
        files = [model_dir / "model.safetensors"]
    else:
        raise ExtractorError(
            "MODEL", f"no model.safetensors or model.safetensors.index.json in {model_dir}"
        )
    for f in files:
        if not f.is_file():
            raise ExtractorError("MODEL", f"missing checkpoint file {f}")
    return files


def weights_sha256(files: list[Path]) -> str:
    """SHA-256 (hex) of the files' bytes, concatenated in the order given."""
    digest = hashlib.sha256()
    buf = bytearray(_HASH_CHUNK_BYTES)
    view = memoryview(buf)
    for path in files:
        with path.open("rb", buffering=0) as f:
            while n := f.readinto(buf):
                digest.update(view[:n])
    return digest.hexdigest()


def start_weights_sha256(files: list[Path]) -> Future[str]:
    """`weights_sha256` on a background thread."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="weights-sha256")
    future = pool.submit(weights_sha256, files)
    pool.shutdown(wait=False)
    return future


@dataclass(frozen=True)
class _Slot:
    """One stacked layer parameter: its key, Hugging Face name suffix and per-layer shape."""

    key: str
    suffix: str
    shape: tuple[int, ...]


def _layer_slots(cfg: ModelConfig) -> list[_Slot]:
    H, Q, KV, I = cfg.hidden_size, cfg.q_size, cfg.kv_size, cfg.intermediate_size
    slots = [
        _Slot("ln1", "input_layernorm.weight", (H,)),
        _Slot("wq", "self_attn.q_proj.weight", (Q, H)),
        _Slot("wk", "self_attn.k_proj.weight", (KV, H)),
        _Slot("wv", "self_attn.v_proj.weight", (KV, H)),
        _Slot("wo", "self_attn.o_proj.weight", (H, Q)),
        _Slot("ln2", "post_attention_layernorm.weight", (H,)),
        _Slot("wg", "mlp.gate_proj.weight", (I, H)),
        _Slot("wu", "mlp.up_proj.weight", (I, H)),
        _Slot("wd", "mlp.down_proj.weight", (H, I)),
    ]
    if cfg.qkv_bias:
        slots += [
            _Slot("bq", "self_attn.q_proj.bias", (Q,)),
            _Slot("bk", "self_attn.k_proj.bias", (KV,)),
            _Slot("bv", "self_attn.v_proj.bias", (KV,)),
        ]
    if cfg.o_bias:
        slots.append(_Slot("bo", "self_attn.o_proj.bias", (H,)))
    if cfg.mlp_bias:
        slots += [
            _Slot("bg", "mlp.gate_proj.bias", (I,)),
            _Slot("bu", "mlp.up_proj.bias", (I,)),
            _Slot("bd", "mlp.down_proj.bias", (H,)),
        ]
    return slots


class _Tensors:
    """Name → file lookup across a checkpoint's files, tolerant of a missing `model.` prefix."""

    def __init__(self, files: list[Path]) -> None:
        self.where: dict[str, SafetensorsFile] = {}
        for path in files:
            f = SafetensorsFile(path)
            for name in f.tensors:
                self.where[name] = f

    def find(self, name: str, shape: tuple[int, ...]) -> tuple[SafetensorsFile, str]:
        for candidate in (f"model.{name}", name):
            f = self.where.get(candidate)
            if f is not None:
                got = f.tensors[candidate].shape
                if got != shape:
                    raise ExtractorError(
                        "MODEL", f"tensor {candidate} has shape {list(got)}, expected {list(shape)}"
                    )
                return f, candidate
        raise ExtractorError("MODEL", f"missing tensor model.{name} in the checkpoint")


def _copy_into(out: np.ndarray, f: SafetensorsFile, name: str) -> None:
    """Copies a tensor into `out` (float32 or bfloat16), converting as it goes."""
    if out.dtype.name == "bfloat16" and f.tensors[name].dtype == "BF16":
        out[...] = f.raw(name).view(out.dtype)
    else:
        out[...] = f.float32(name)


def host_dtype(compute_dtype: str) -> np.dtype:
    """The numpy dtype parameters are held in on the host: float32, or ml_dtypes' bfloat16."""
    if compute_dtype == "float32":
        return np.dtype(np.float32)
    import ml_dtypes  # ships with jax; only bfloat16 runs need it

    return np.dtype(ml_dtypes.bfloat16)


def load_params(files: list[Path], cfg: ModelConfig, num_layers: int, compute_dtype: str) -> Params:
    """Reads the embedding and layers `0..num_layers-1` into host arrays of `compute_dtype`."""
    tensors = _Tensors(files)
    dtype = host_dtype(compute_dtype)
    f, name = tensors.find("embed_tokens.weight", (cfg.vocab_size, cfg.hidden_size))
    embed = np.empty((cfg.vocab_size, cfg.hidden_size), dtype=dtype)
    _copy_into(embed, f, name)
    layers: dict[str, np.ndarray] = {}
    for slot in _layer_slots(cfg):
        stacked = np.empty((num_layers, *slot.shape), dtype=dtype)
        for layer in range(num_layers):
            f, name = tensors.find(f"layers.{layer}.{slot.suffix}", slot.shape)
            _copy_into(stacked[layer], f, name)
        layers[slot.key] = stacked
    return {"embed": embed, "layers": layers}
