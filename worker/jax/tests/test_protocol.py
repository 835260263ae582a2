"""Framing: round trips, layout on the wire, and every way a stream can be broken."""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest

from shardline_jax.errors import ProtocolError
from shardline_jax.protocol import MAX_JSON_BYTES, read_frame, write_frame


def encode(header: dict[str, object], arrays: list[tuple[str, np.ndarray]] = []) -> bytes:
    buf = io.BytesIO()
    write_frame(buf, header, arrays)
    return buf.getvalue()


def raw_frame(header: dict[str, object], payload: bytes, magic: bytes = b"SLXF") -> bytes:
    text = json.dumps(header).encode()
    return magic + struct.pack("<IQ", len(text), len(payload)) + text + payload


def broken(data: bytes) -> str:
    with pytest.raises(ProtocolError) as caught:
        read_frame(io.BytesIO(data))
    return str(caught.value)


def test_round_trip_and_wire_layout() -> None:
    a = np.arange(5, dtype=np.int32)
    b = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
    c = np.array([[0.5, -2.0, 65504.0]], dtype=np.float16)
    empty = np.zeros((0, 4), dtype=np.float16)
    data = encode({"type": "x", "id": 7}, [("a", a), ("b", b), ("c", c), ("e", empty)])
    assert data[:4] == b"SLXF"
    json_len, payload_len = struct.unpack("<IQ", data[4:16])
    header = json.loads(data[16 : 16 + json_len])
    assert header["arrays"] == [
        {"name": "a", "dtype": "int32", "shape": [5], "offset": 0, "nbytes": 20},
        {"name": "b", "dtype": "float32", "shape": [2, 3], "offset": 24, "nbytes": 24},
        {"name": "c", "dtype": "float16", "shape": [1, 3], "offset": 48, "nbytes": 6},
        {"name": "e", "dtype": "float16", "shape": [0, 4], "offset": 56, "nbytes": 0},
    ]
    assert payload_len == 56 == len(data) - 16 - json_len
    payload = data[16 + json_len :]
    assert payload[20:24] == b"\0\0\0\0"  # alignment padding
    assert payload[24:48] == b.astype("<f4").tobytes()
    stream = io.BytesIO(data + encode({"type": "y"}))
    frame = read_frame(stream)
    assert frame is not None and frame.type == "x" and frame.header["id"] == 7
    assert list(frame.arrays) == ["a", "b", "c", "e"]
    wanted: list[tuple[str, np.ndarray]] = [("a", a), ("b", b), ("c", c), ("e", empty)]
    for name, want in wanted:
        assert frame.arrays[name].dtype == want.dtype and np.array_equal(frame.arrays[name], want)
    second = read_frame(stream)
    assert second is not None and second.type == "y" and second.arrays == {}
    assert read_frame(stream) is None  # clean EOF between frames


def test_non_contiguous_and_other_dtypes() -> None:
    m = np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2]
    frame = read_frame(io.BytesIO(encode({"type": "x"}, [("m", m)])))
    assert frame is not None and np.array_equal(frame.arrays["m"], m)
    with pytest.raises(ValueError):
        encode({"type": "x"}, [("d", np.zeros(2, dtype=np.float64))])


def test_broken_streams_are_protocol_errors() -> None:
    good = encode({"type": "x"}, [("a", np.arange(4, dtype=np.int32))])
    assert "bad magic" in broken(b"GARBAGE!" + good[8:])
    assert "bad magic" in broken(raw_frame({"type": "x"}, b"", magic=b"SLXG"))
    too_big = b"SLXF" + struct.pack("<IQ", MAX_JSON_BYTES + 1, 0)
    assert "exceeds" in broken(too_big)  # refused before reading 16 MiB
    head = json.dumps({"type": "x"}).encode()
    assert "exceeds" in broken(b"SLXF" + struct.pack("<IQ", len(head), 1 << 41) + head)
    # A payload length that lies costs no memory: the stream ends long before it.
    broken(b"SLXF" + struct.pack("<IQ", len(head), 100 << 30) + head + b"\0" * 64)
    assert "ended inside a frame's prefix" in broken(good[:9])
    assert "ended inside a frame's payload" in broken(good[:-1])
    assert "ended inside a frame's header" in broken(good[:20])
    assert "not UTF-8 JSON" in broken(b"SLXF" + struct.pack("<IQ", 3, 0) + b"{x}")
    assert "string type" in broken(raw_frame({"kind": "x"}, b""))
    assert "string type" in broken(raw_frame([1, 2], b""))  # type: ignore[arg-type]

    def with_array(entry: dict[str, object], payload: bytes = b"\0" * 16) -> str:
        return broken(raw_frame({"type": "x", "arrays": [entry]}, payload))

    base = {"name": "a", "dtype": "int32", "shape": [4], "offset": 0, "nbytes": 16}
    assert "runs past the payload" in with_array({**base, "offset": 8})
    assert "runs past the payload" in with_array(base, b"\0" * 12)
    assert "does not match" in with_array({**base, "nbytes": 12})
    assert "not a multiple of 8" in with_array({**base, "shape": [2], "nbytes": 8, "offset": 4})
    assert "dtype" in with_array({**base, "dtype": "int64"})
    assert "non-negative" in with_array({**base, "shape": [-4]})
    assert "appears twice" in broken(raw_frame({"type": "x", "arrays": [base, base]}, b"\0" * 16))
