"""Frames of the shardline extractor protocol, version 1 (docs/extractor-protocol.md).

    magic "SLXF" | u32 LE json_len | u64 LE payload_len | JSON header | payload

The header is a UTF-8 JSON object with a string `type`; its `arrays` list names the arrays in
the payload: `{"name", "dtype": "int32"|"float16"|"float32", "shape", "offset", "nbytes"}`,
little-endian, C order, each offset a multiple of 8 from the payload's start. Anything else
(a wrong magic, a header over 16 MiB, an array past the payload) is a `ProtocolError`: the
stream can no longer be trusted.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Sequence

import numpy as np

from .errors import ProtocolError

MAGIC = b"SLXF"
"""The four bytes every frame starts with."""

PREFIX = struct.Struct("<4sIQ")
"""magic, json_len (u32 LE), payload_len (u64 LE): 16 bytes."""

MAX_JSON_BYTES = 16 * 1024 * 1024
"""Largest header a reader accepts."""

MAX_PAYLOAD_BYTES = 1 << 40
"""Largest payload a reader accepts (1 TiB: a sanity bound, not a memory budget)."""

ALIGN = 8
"""Array offsets are multiples of this many bytes."""

WIRE_DTYPES: dict[str, np.dtype] = {
    "int32": np.dtype("<i4"),
    "float16": np.dtype("<f2"),
    "float32": np.dtype("<f4"),
}
"""Array element types on the wire."""

_READ_CHUNK_BYTES = 64 * 1024 * 1024


@dataclass
class Frame:
    """A decoded frame: its header and its arrays by name (views of the payload)."""

    header: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def type(self) -> str:
        """The header's `type`."""
        return str(self.header["type"])


def _read_exact(stream: BinaryIO, n: int, what: str) -> bytes:
    """Exactly `n` bytes (a small, bounded read: prefix or header)."""
    data = stream.read(n)
    while len(data) < n:
        more = stream.read(n - len(data))
        if not more:
            raise ProtocolError(f"stream ended inside a frame's {what} ({len(data)} of {n} bytes)")
        data += more
    return data


def _read_payload(stream: BinaryIO, n: int) -> np.ndarray:
    """The payload as a uint8 array, read in place.

    `np.empty` reserves address space without touching it, so a length that lies (garbage on
    the stream) costs nothing until bytes actually arrive, and the stream ends first.
    """
    if n > MAX_PAYLOAD_BYTES:
        raise ProtocolError(f"payload of {n} bytes exceeds {MAX_PAYLOAD_BYTES}")
    try:
        buf = np.empty(n, dtype=np.uint8)
    except MemoryError as e:
        raise ProtocolError(f"payload of {n} bytes cannot be held in memory") from e
    view = buf.data
    at = 0
    while at < n:
        # Every binary stream has readinto; typeshed's BinaryIO just does not declare it.
        got = stream.readinto(view[at : min(n, at + _READ_CHUNK_BYTES)])  # type: ignore[attr-defined]
        if not got:
            raise ProtocolError(f"stream ended inside a frame's payload ({at} of {n} bytes)")
        at += got
    return buf


def _layout(entry: Any, payload_len: int) -> tuple[str, np.dtype, tuple[int, ...], int]:
    if not isinstance(entry, dict):
        raise ProtocolError(f"array entry {entry!r} is not an object")
    name, dtype, shape = entry.get("name"), entry.get("dtype"), entry.get("shape")
    offset, nbytes = entry.get("offset"), entry.get("nbytes")
    if not isinstance(name, str) or dtype not in WIRE_DTYPES:
        raise ProtocolError(f"array entry {entry!r}: needs a name and a dtype of {sorted(WIRE_DTYPES)}")
    if not isinstance(shape, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in [*shape, offset, nbytes]
    ):
        raise ProtocolError(f"array {name!r}: shape, offset and nbytes must be non-negative integers")
    assert isinstance(offset, int) and isinstance(nbytes, int)
    wire = WIRE_DTYPES[dtype]
    if nbytes != math.prod(shape) * wire.itemsize:
        raise ProtocolError(f"array {name!r}: nbytes {nbytes} does not match {dtype} {shape}")
    if offset % ALIGN:
        raise ProtocolError(f"array {name!r}: offset {offset} is not a multiple of {ALIGN}")
    if offset + nbytes > payload_len:
        raise ProtocolError(f"array {name!r} runs past the payload ({offset}+{nbytes} > {payload_len})")
    return name, wire, tuple(shape), offset


def read_frame(stream: BinaryIO) -> Frame | None:
    """The next frame, or None at a clean end of stream (EOF between frames)."""
    first = stream.read(PREFIX.size)
    if not first:
        return None
    if len(first) < PREFIX.size:
        first += _read_exact(stream, PREFIX.size - len(first), "prefix")
    magic, json_len, payload_len = PREFIX.unpack(first)
    if magic != MAGIC:
        raise ProtocolError(f"bad magic {magic!r} (expected {MAGIC!r})")
    if json_len > MAX_JSON_BYTES:
        raise ProtocolError(f"header of {json_len} bytes exceeds {MAX_JSON_BYTES}")
    try:
        header = json.loads(_read_exact(stream, json_len, "header").decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProtocolError(f"header is not UTF-8 JSON: {e}") from e
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise ProtocolError("header is not a JSON object with a string type")
    payload = _read_payload(stream, payload_len)
    entries = header.get("arrays", [])
    if not isinstance(entries, list):
        raise ProtocolError("arrays is not a list")
    arrays: dict[str, np.ndarray] = {}
    for entry in entries:
        name, wire, shape, offset = _layout(entry, payload_len)
        if name in arrays:
            raise ProtocolError(f"array {name!r} appears twice")
        arrays[name] = payload[offset : offset + wire.itemsize * math.prod(shape)].view(wire).reshape(shape)
    return Frame(header, arrays)


def _wire(array: np.ndarray) -> tuple[str, np.ndarray]:
    for name, dtype in WIRE_DTYPES.items():
        if array.dtype == dtype:
            return name, np.ascontiguousarray(array)
    raise ValueError(f"arrays travel as int32, float16 or float32, not {array.dtype}")


def write_frame(stream: BinaryIO, header: dict[str, Any], arrays: Sequence[tuple[str, np.ndarray]] = ()) -> None:
    """Writes one frame (the header's `arrays` is filled in here) and flushes."""
    entries: list[dict[str, Any]] = []
    data: list[tuple[int, np.ndarray]] = []
    offset = 0
    for name, array in arrays:
        dtype, contiguous = _wire(array)
        offset = -(-offset // ALIGN) * ALIGN
        entries.append(
            {"name": name, "dtype": dtype, "shape": list(contiguous.shape), "offset": offset, "nbytes": contiguous.nbytes}
        )
        data.append((offset, contiguous))
        offset += contiguous.nbytes
    body = dict(header)
    if arrays:
        body["arrays"] = entries
    text = json.dumps(body, separators=(",", ":")).encode("utf-8")
    if len(text) > MAX_JSON_BYTES:
        raise ValueError(f"header of {len(text)} bytes exceeds {MAX_JSON_BYTES}")
    stream.write(PREFIX.pack(MAGIC, len(text), offset))
    stream.write(text)
    at = 0
    for start, array in data:
        if start > at:
            stream.write(b"\0" * (start - at))
        if array.nbytes:
            stream.write(array.reshape(-1).view(np.uint8).data)
        at = start + array.nbytes
    stream.flush()


def error_header(request_id: int | None, code: str, message: str, retryable: bool) -> dict[str, Any]:
    """An `error` frame's header."""
    return {"type": "error", "id": request_id, "code": code, "message": message, "retryable": retryable}
