"""A session: the checked init, the loaded model, and the host side of every request.

For one `extract` request it checks the input against the model and the session's limits,
pads the batch (to buckets when the backend compiles), builds each shard's row index (every
real token, or the requested positions), starts the forward and gather programs, and later
turns the gathered rows back into per-layer arrays in sequence order.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .backend import Backend, ForwardSpec, NumpyBackend
from .buckets import Buckets
from .config import ModelConfig, load_config
from .errors import ExtractorError
from .model import rope_inv_freq
from .weights import Params, checkpoint_files, load_params, start_weights_sha256

log = logging.getLogger("shardline_jax")


@dataclass(frozen=True)
class Limits:
    """The parent's promises about requests (from `init`)."""

    max_batch_size: int
    """Most sequences in one request."""
    max_batch_tokens: int
    """Most `B × longest` of a request of two or more sequences (a single sequence may exceed it)."""
    max_seq_length: int
    """Longest sequence."""


@dataclass(frozen=True)
class Result:
    """Rows of one request: `rows[i]` is `[sum(row_counts), hidden]` for `layers[i]`."""

    row_counts: np.ndarray
    rows: list[np.ndarray]


def _bad(message: str) -> ExtractorError:
    return ExtractorError("INVALID_INPUT", message)


def _int32_vector(arrays: dict[str, np.ndarray], name: str) -> np.ndarray:
    a = arrays.get(name)
    if a is None:
        raise _bad(f"extract has no {name} array")
    if a.dtype != np.int32 or a.ndim != 1:
        raise _bad(f"{name} must be a 1-D int32 array, got {a.dtype} {list(a.shape)}")
    return a


class Extractor:
    """A loaded model behind a backend, ready for requests."""

    def __init__(self, spec: ForwardSpec, backend: Backend, limits: Limits) -> None:
        self.spec = spec
        self.cfg: ModelConfig = spec.cfg
        self.layers = spec.layers
        self.backend = backend
        self.limits = limits
        self.buckets = Buckets(limits.max_batch_size, limits.max_seq_length, backend.num_shards)

    @staticmethod
    def open(
        model_dir: Path,
        layers: list[int] | None,
        compute_dtype: str,
        output_dtype: str,
        limits: Limits,
        make_backend: Callable[[ForwardSpec, Params], Backend] | None = None,
    ) -> tuple[Extractor, str]:
        """Loads the checkpoint; returns the session and the weights hash. `make_backend` defaults to numpy."""
        cfg = load_config(model_dir)
        chosen = tuple(range(cfg.num_layers)) if layers is None else tuple(sorted(set(layers)))
        if not chosen:
            raise _bad("layers must name at least one layer (or be null for all)")
        for layer in chosen:
            if layer < 0 or layer >= cfg.num_layers:
                raise _bad(f"layer {layer} does not exist (the model has {cfg.num_layers} layers, 0-based)")
        files = checkpoint_files(model_dir)
        sha = start_weights_sha256(files)
        started = time.perf_counter()
        params = load_params(files, cfg, chosen[-1] + 1, compute_dtype)
        log.info("read %d layer(s) from %d file(s) in %.1f s", chosen[-1] + 1, len(files), time.perf_counter() - started)
        spec = ForwardSpec(cfg, chosen, rope_inv_freq(cfg), compute_dtype, output_dtype)
        backend = make_backend(spec, params) if make_backend else NumpyBackend(spec, params)
        return Extractor(spec, backend, limits), sha.result()

    def check(
        self, tokens: np.ndarray, lengths: np.ndarray, positions: np.ndarray | None, counts: np.ndarray | None
    ) -> None:
        """Raises `INVALID_INPUT` unless the request fits the model and the limits."""
        B = lengths.shape[0]
        lim = self.limits
        if B > lim.max_batch_size:
            raise _bad(f"{B} sequences exceed max_batch_size {lim.max_batch_size}")
        if B and int(lengths.min()) < 1:
            raise _bad("every sequence needs at least one token")
        longest = int(lengths.max()) if B else 0
        if longest > lim.max_seq_length:
            raise _bad(f"a sequence of {longest} tokens exceeds max_seq_length {lim.max_seq_length}")
        if B > 1 and B * longest > lim.max_batch_tokens:
            raise _bad(f"{B} sequences × {longest} tokens exceed max_batch_tokens {lim.max_batch_tokens}")
        if tokens.shape[0] != int(lengths.sum(dtype=np.int64)):
            raise _bad(f"token_ids has {tokens.shape[0]} entries, lengths sum to {int(lengths.sum())}")
        if tokens.size and (int(tokens.min()) < 0 or int(tokens.max()) >= self.cfg.vocab_size):
            bad = int(tokens[(tokens < 0) | (tokens >= self.cfg.vocab_size)][0])
            raise _bad(f"token id {bad} is outside the vocabulary [0, {self.cfg.vocab_size})")
        if (positions is None) != (counts is None):
            raise _bad("positions and position_counts come together or not at all")
        if positions is None or counts is None:
            return
        if counts.shape[0] != B:
            raise _bad(f"position_counts has {counts.shape[0]} entries for {B} sequences")
        if B and int(counts.min()) < 0:
            raise _bad("position_counts must be >= 0")
        if positions.shape[0] != int(counts.sum(dtype=np.int64)):
            raise _bad(f"positions has {positions.shape[0]} entries, position_counts sum to {int(counts.sum())}")
        seq = np.repeat(np.arange(B), counts)
        out_of_range = (positions < 0) | (positions >= lengths[seq])
        if out_of_range.any():
            k = int(np.argmax(out_of_range))
            raise _bad(f"position {int(positions[k])} is outside sequence {int(seq[k])} of {int(lengths[seq[k]])} tokens")
        same_seq = seq[1:] == seq[:-1]
        if (same_seq & (positions[1:] <= positions[:-1])).any():
            raise _bad("positions must be strictly ascending within each sequence")

    def submit(self, arrays: dict[str, np.ndarray]) -> Callable[[], Result]:
        """Checks and starts one request; the returned function waits for its `Result`."""
        tokens = _int32_vector(arrays, "token_ids")
        lengths = _int32_vector(arrays, "lengths")
        positions = _int32_vector(arrays, "positions") if "positions" in arrays else None
        counts = _int32_vector(arrays, "position_counts") if "position_counts" in arrays else None
        self.check(tokens, lengths, positions, counts)
        B = lengths.shape[0]
        row_counts = lengths.copy() if counts is None else counts.copy()
        if B == 0 or int(row_counts.sum()) == 0:
            empty = np.zeros((0, self.cfg.hidden_size), dtype=self.spec.output_dtype)
            return lambda: Result(row_counts, [empty for _ in self.layers])

        n = self.backend.num_shards
        longest = int(lengths.max())
        if self.backend.bucketed:
            B_pad, S_pad = self.buckets.batch(B), self.buckets.seq(longest)
        else:
            B_pad, S_pad = -(-B // n) * n, longest
        per_shard = B_pad // n
        starts = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
        padded = np.zeros((B_pad, S_pad), dtype=np.int32)
        for k in range(B):
            padded[k, : lengths[k]] = tokens[starts[k] : starts[k + 1]]

        # Row index local to each shard's flattened [B/n · S] positions, shard after shard.
        if positions is None:
            wanted = [np.arange(int(lengths[k]), dtype=np.int64) for k in range(B)]
        else:
            pstarts = np.concatenate([[0], np.cumsum(row_counts, dtype=np.int64)])
            wanted = [positions[pstarts[k] : pstarts[k + 1]].astype(np.int64) for k in range(B)]
        shard_rows = [
            [(k - d * per_shard) * S_pad + wanted[k] for k in range(d * per_shard, min((d + 1) * per_shard, B))]
            for d in range(n)
        ]
        shard_counts = [sum(len(r) for r in rows) for rows in shard_rows]
        R = max(max(shard_counts), 1)
        if self.backend.bucketed:
            R = self.buckets.rows(R, per_shard * S_pad)
        index = np.zeros(n * R, dtype=np.int32)
        for d, rows in enumerate(shard_rows):
            if rows:
                index[d * R : d * R + shard_counts[d]] = np.concatenate(rows)

        gathered = self.backend.gather(self.backend.forward(padded), index)

        def wait() -> Result:
            host = self.backend.to_host(gathered)
            if n == 1:
                return Result(row_counts, [host[i, : shard_counts[0]] for i in range(len(self.layers))])
            return Result(
                row_counts,
                [
                    np.concatenate([host[i, d * R : d * R + shard_counts[d]] for d in range(n)])
                    for i in range(len(self.layers))
                ],
            )

        return wait
