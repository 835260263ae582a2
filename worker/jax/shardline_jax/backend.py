"""Where the forward pass runs: the `Backend` port and its numpy implementation.

A backend runs two programs over a padded batch split into `num_shards` equal parts (one per
device): `forward` (tokens `[B, S]` → residual streams `[L, B, S, H]`, left on the device) and
`gather` (each shard picks its requested rows by a local index → `[L, shards·R, H]`), then hands
the result to the host. `devices.JaxBackend` maps shards onto devices with `shard_map`;
`NumpyBackend` runs the same model functions shard by shard on the host, so the host-side
logic (padding, per-shard indices, reassembly) is exercised without JAX.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import numpy as np

from . import model
from .config import ModelConfig
from .weights import Params


@dataclass(frozen=True)
class ForwardSpec:
    """What every program of a session shares."""

    cfg: ModelConfig
    layers: tuple[int, ...]
    """Layers returned, ascending; the forward runs layers 0..max(layers)."""
    inv_freq: np.ndarray
    compute_dtype: str
    """`float32` or `bfloat16`."""
    output_dtype: str
    """`float16` or `float32`."""


class Backend(Protocol):
    """Runs the programs; see the module doc."""

    name: str
    """`jax` or `numpy` (the `backend` field of `ready`)."""
    devices: list[str]
    """One entry per device the batch is split across."""
    num_shards: int
    """Equal parts the padded batch is split into (the device count)."""
    bucketed: bool
    """Whether shapes must come from `buckets.Buckets` (compiled backends)."""
    attention: str
    """Attention implementation: `xp` (model.attention, shared with numpy) or `cudnn`."""

    def forward(self, tokens: np.ndarray) -> Any:
        """Starts the forward pass of `tokens [B, S]` int32; returns a handle to `[L, B, S, H]`."""
        ...

    def gather(self, hidden: Any, index: np.ndarray) -> Any:
        """Starts gathering rows: shard d takes `index[d·R:(d+1)·R]` of its own `[L, B/d, S, H]` flattened."""
        ...

    def to_host(self, rows: Any) -> np.ndarray:
        """Waits for `rows` and returns them as a host array `[L, shards·R, H]`."""
        ...


class NumpyBackend:
    """numpy on the host: float32, jit off, shards run one after another."""

    name = "numpy"
    attention = "xp"

    def __init__(self, spec: ForwardSpec, params: Params, num_shards: int = 1, bucketed: bool = False) -> None:
        self.num_shards = num_shards
        self.bucketed = bucketed
        self.devices = ["cpu"] * num_shards
        ops = model.numpy_ops(spec.output_dtype)
        self._forward = partial(model.forward, ops, spec.cfg, spec.layers, spec.inv_freq, params)
        self._gather = partial(model.gather_rows, ops)

    def _shards(self, batch: int) -> list[slice]:
        per = batch // self.num_shards
        return [slice(d * per, (d + 1) * per) for d in range(self.num_shards)]

    def forward(self, tokens: np.ndarray) -> np.ndarray:
        parts = [self._forward(tokens[s]) for s in self._shards(tokens.shape[0])]
        return np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]

    def gather(self, hidden: np.ndarray, index: np.ndarray) -> np.ndarray:
        per_rows = index.shape[0] // self.num_shards
        parts = [
            self._gather(hidden[:, s], index[d * per_rows : (d + 1) * per_rows])
            for d, s in enumerate(self._shards(hidden.shape[1]))
        ]
        return np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]

    def to_host(self, rows: Any) -> np.ndarray:
        return np.ascontiguousarray(rows)
