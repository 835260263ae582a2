"""A numpy-only safetensors reader: header JSON, then tensors as views of a read-only memmap.

The format (huggingface/safetensors, "Format"): an 8-byte little-endian header length N, N
bytes of JSON `{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {..}}`,
then the tensors' bytes, offsets relative to the end of the header. Nothing is read until a
tensor is asked for, and then only its pages.

bfloat16 has no numpy dtype: `raw()` gives its bit patterns as uint16 and `float32()` widens
them exactly (a bf16 is the top half of a float32).
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ExtractorError

MAX_HEADER_BYTES = 100 * 1024 * 1024
"""Largest header accepted (the format's own limit)."""

DTYPES: dict[str, str] = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "BF16": "<u2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U8": "u1",
    "BOOL": "?",
}
"""safetensors dtype → the numpy dtype its bytes are read as (BF16 as raw uint16 bits)."""


def bf16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    """Widens bfloat16 bit patterns (uint16) to float32, exactly."""
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's entry: `begin`/`end` are absolute byte offsets in the file."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


class SafetensorsFile:
    """One `.safetensors` file, opened for reading."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._map: np.memmap | None = None
        try:
            size = path.stat().st_size
            with path.open("rb") as f:
                prefix = f.read(8)
                if len(prefix) < 8:
                    raise self._error("shorter than its 8-byte header length")
                (header_len,) = struct.unpack("<Q", prefix)
                if header_len > MAX_HEADER_BYTES or 8 + header_len > size:
                    raise self._error(f"header length {header_len} does not fit the file ({size} bytes)")
                header_bytes = f.read(header_len)
        except OSError as e:
            raise ExtractorError("MODEL", f"cannot read {path}: {e.strerror or e}") from e
        try:
            header = json.loads(header_bytes.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise self._error(f"header is not JSON: {e}") from e
        if not isinstance(header, dict):
            raise self._error("header is not a JSON object")
        meta = header.pop("__metadata__", None) or {}
        if not isinstance(meta, dict):
            raise self._error("__metadata__ is not an object")
        self.metadata: dict[str, Any] = meta
        data_start = 8 + header_len
        self.tensors: dict[str, TensorInfo] = {
            name: self._entry(name, entry, data_start, size) for name, entry in header.items()
        }

    def _error(self, message: str) -> ExtractorError:
        return ExtractorError("MODEL", f"{self.path}: {message}")

    def _entry(self, name: str, entry: Any, data_start: int, size: int) -> TensorInfo:
        if not isinstance(entry, dict):
            raise self._error(f"entry {name!r} is not an object")
        dtype = entry.get("dtype")
        if dtype not in DTYPES:
            raise self._error(f"tensor {name!r} has unsupported dtype {dtype!r}")
        shape = entry.get("shape")
        offsets = entry.get("data_offsets")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise self._error(f"tensor {name!r} has a bad shape {shape!r}")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        ):
            raise self._error(f"tensor {name!r} has bad data_offsets {offsets!r}")
        begin, end = data_start + offsets[0], data_start + offsets[1]
        nbytes = math.prod(shape) * np.dtype(DTYPES[dtype]).itemsize
        if offsets[0] < 0 or end > size or end - begin != nbytes:
            raise self._error(
                f"tensor {name!r}: data_offsets {offsets} do not hold {shape} {dtype} in a {size}-byte file"
            )
        return TensorInfo(name, dtype, tuple(shape), begin, end)

    def raw(self, name: str) -> np.ndarray:
        """The tensor as stored: a read-only view (no copy); BF16 as uint16 bit patterns."""
        info = self.tensors.get(name)
        if info is None:
            raise self._error(f"no tensor {name!r}")
        if info.begin == info.end:
            return np.zeros(info.shape, dtype=DTYPES[info.dtype])
        if self._map is None:
            self._map = np.memmap(self.path, dtype=np.uint8, mode="r")
        return self._map[info.begin : info.end].view(DTYPES[info.dtype]).reshape(info.shape)

    def float32(self, name: str) -> np.ndarray:
        """The tensor widened to float32 (a view when it is stored as F32, else a copy)."""
        info = self.tensors.get(name)
        raw = self.raw(name)
        if info is not None and info.dtype == "BF16":
            return bf16_bits_to_float32(raw)
        return raw.astype(np.float32, copy=False)

    def close(self) -> None:
        """Drops the file mapping (views already handed out keep it alive)."""
        self._map = None
