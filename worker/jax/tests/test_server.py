"""The protocol end to end through a real child: `python3 -m shardline_jax --array numpy`."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import subprocess
import sys
from pathlib import Path
from contextlib import contextmanager
from typing import IO, Any, Iterator

import numpy as np

import naive
from shardline_jax.client import ExtractorProcess, rows_by_sequence
from shardline_jax.protocol import read_frame
from tinymodel import tiny_config, write_model

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
COMMAND = [sys.executable, "-m", "shardline_jax", "--array", "numpy"]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), env.get("PYTHONPATH")]))
    return env


@contextmanager
def running(tmp_path: Path, log: str = "stderr.log") -> Iterator[tuple[ExtractorProcess, IO[Any]]]:
    """A numpy child whose stderr goes to `tmp_path/log`; killed on the way out if still running."""
    with (tmp_path / log).open("w+") as stderr:
        child = ExtractorProcess(COMMAND, env=child_env(), stderr=stderr)
        try:
            yield child, stderr
        finally:
            child.close()


def make_model(tmp_path: Path, **overrides: Any) -> tuple[Path, dict[str, Any], dict[str, np.ndarray]]:
    folder = tmp_path / "model"
    config = tiny_config("qwen2", **overrides)
    return folder, config, write_model(folder, config, seed=21)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def test_init_ready_extract_with_and_without_positions_and_shutdown(tmp_path: Path) -> None:
    folder, config, weights = make_model(tmp_path)
    with running(tmp_path) as (child, _):
        ready = child.init(str(folder), layers=[2, 0], output_dtype="float32", max_batch_size=4, max_seq_length=64)
        assert ready is not None and ready.type == "ready", ready and ready.header
        h = ready.header
        assert (h["protocol"], h["version"], h["backend"]) == ("shardline-extractor", 1, "numpy")
        assert h["layers"] == [0, 2] and h["devices"] == ["cpu"]
        assert (h["compute_dtype"], h["output_dtype"]) == ("float32", "float32")
        assert (h["max_batch_size"], h["max_batch_tokens"], h["max_seq_length"]) == (4, 4096, 64)
        sha = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
        assert h["model"] == {
            "model_type": "qwen2",
            "num_layers": 3,
            "hidden_size": 32,
            "vocab_size": 50,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "weights_sha256": sha,
        }

        seqs = [[1, 2, 3, 4, 5, 6, 7], [49, 0, 8]]
        child.send_extract(10, seqs)
        result = child.receive()
        assert result is not None and result.type == "result", result and result.header
        assert {k: result.header[k] for k in ("id", "hidden_size", "layers", "dtype")} == {
            "id": 10,
            "hidden_size": 32,
            "layers": [0, 2],
            "dtype": "float32",
        }
        assert [a["name"] for a in result.header["arrays"]] == ["row_counts", "resid_post.0", "resid_post.2"]
        assert result.arrays["row_counts"].tolist() == [7, 3]
        for layer in (0, 2):
            for k, rows in enumerate(rows_by_sequence(result, layer)):
                ref = naive.residuals(config, weights, seqs[k])[layer]
                assert rows.shape == (len(seqs[k]), 32)
                assert np.abs(rows - ref).max() <= 1e-5 * rms(ref)

        child.send_extract(11, seqs, positions=[[0, 6], [2]])
        picked = child.receive()
        assert picked is not None and picked.type == "result" and picked.header["id"] == 11
        assert picked.arrays["row_counts"].tolist() == [2, 1]
        full = result.arrays["resid_post.2"]
        assert np.array_equal(picked.arrays["resid_post.2"], full[[0, 6, 9]])

        child.send_extract(12, [])  # no sequences: an empty answer
        empty = child.receive()
        assert empty is not None and empty.type == "result" and empty.header["id"] == 12
        assert empty.arrays["row_counts"].shape == (0,) and empty.arrays["resid_post.2"].shape == (0, 32)

        bye, status = child.shutdown()
        assert bye is not None and bye.type == "bye" and status == 0


def test_pipelined_requests_are_answered_in_order_and_a_bad_one_does_not_stop_the_server(tmp_path: Path) -> None:
    folder, _, _ = make_model(tmp_path)
    with running(tmp_path) as (child, _):
        ready = child.init(str(folder), layers=None, output_dtype="float16", max_batch_size=3, max_batch_tokens=16, max_seq_length=20)
        assert ready is not None and ready.type == "ready" and ready.header["layers"] == [0, 1, 2]
        child.send_extract(1, [[5, 6, 7]])
        child.send_extract(2, [[5, 50, 7]])  # token id 50 is outside a vocabulary of 50
        child.send_extract(3, [[1] * 21])  # longer than max_seq_length
        child.send_extract(4, [[1, 2], [3]], positions=[[1, 1], [0]])  # not strictly ascending
        child.send_extract(5, [[1] * 6, [2] * 6, [3]])  # 3 sequences × 6 tokens > max_batch_tokens 16
        child.send_extract(6, [[1] * 20])  # a single sequence may exceed max_batch_tokens
        child.send_extract(7, [[9, 8], [7]])
        answers = [child.receive() for _ in range(7)]
        assert [a.header["id"] for a in answers if a is not None] == [1, 2, 3, 4, 5, 6, 7]
        assert [a.type for a in answers if a is not None] == ["result", "error", "error", "error", "error", "result", "result"]
        errors = {a.header["id"]: a.header for a in answers if a is not None and a.type == "error"}
        assert all(e["code"] == "INVALID_INPUT" and e["retryable"] is False for e in errors.values())
        assert "token id 50 is outside the vocabulary [0, 50)" in errors[2]["message"]
        assert "exceeds max_seq_length 20" in errors[3]["message"]
        assert "strictly ascending" in errors[4]["message"]
        assert "3 sequences × 6 tokens exceed max_batch_tokens 16" in errors[5]["message"]
        assert answers[5] is not None and answers[5].arrays["row_counts"].tolist() == [20]
        last = answers[6]
        assert last is not None and last.header["dtype"] == "float16"
        assert last.arrays["resid_post.1"].dtype == np.float16 and last.arrays["resid_post.1"].shape == (3, 32)
        child.stdin.close()  # EOF: exit 0 without bye
        assert child.receive() is None
        assert child.proc.wait(timeout=60) == 0


def test_a_version_it_does_not_speak_is_refused_with_exit_2(tmp_path: Path) -> None:
    folder, _, _ = make_model(tmp_path)
    with running(tmp_path) as (child, _):
        answer = child.init(str(folder), versions=[2, 3])
        assert answer is not None and answer.type == "error"
        assert answer.header["id"] is None and answer.header["code"] == "UNSUPPORTED_VERSION"
        assert answer.header["retryable"] is False and "version 1" in answer.header["message"]
        assert child.proc.wait(timeout=60) == 2


def test_garbage_on_stdin_makes_the_child_exit_non_zero_with_a_message(tmp_path: Path) -> None:
    folder, _, _ = make_model(tmp_path)
    for case, data in {
        "before-init": b"hello, this is not a frame at all\n",
        "after-init": b"SLXF" + struct.pack("<IQ", 1 << 30, 0),
    }.items():
        with running(tmp_path, f"{case}.log") as (child, stderr):
            if case == "after-init":
                ready = child.init(str(folder))
                assert ready is not None and ready.type == "ready"
            child.stdin.write(data)
            child.stdin.close()
            status = child.proc.wait(timeout=60)
            assert status == 3, case
            stderr.seek(0)
            assert "stdin is not the protocol" in stderr.read(), case


def test_start_failures_answer_an_error_and_exit_non_zero(tmp_path: Path) -> None:
    folder, _, _ = make_model(tmp_path)
    broken = tmp_path / "gpt2"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "gpt2"}')
    missing = tmp_path / "missing"
    write_model(missing, tiny_config("qwen2"), drop=("model.layers.2.self_attn.k_proj.bias",))
    cases: list[tuple[str, dict[str, Any], str, str]] = [
        (str(tmp_path / "nowhere"), {}, "MODEL", "is not a folder"),
        (str(tmp_path), {}, "MODEL", "config.json"),
        (str(broken), {}, "MODEL", "unsupported model_type 'gpt2'"),
        (str(missing), {}, "MODEL", "missing tensor model.layers.2.self_attn.k_proj.bias"),
        (str(folder), {"compute_dtype": "bfloat16"}, "INVALID_INPUT", "needs --array jax"),
        (str(folder), {"layers": [3]}, "INVALID_INPUT", "layer 3 does not exist"),
        (str(folder), {"max_batch_size": 0}, "INVALID_INPUT", "max_batch_size must be a positive integer"),
    ]
    for path, extra, code, words in cases:
        with running(tmp_path) as (child, _):
            answer = child.init(path, **extra)
            assert answer is not None and answer.type == "error", (path, extra)
            assert answer.header["id"] is None and answer.header["code"] == code, answer.header
            assert words in answer.header["message"], answer.header["message"]
            assert child.proc.wait(timeout=60) == 1


def test_stdout_carries_frames_only(tmp_path: Path) -> None:
    """After the package takes stdout over, prints (Python's or a C library's) land on stderr."""
    script = """
import os, sys
from shardline_jax.__main__ import _protocol_stdout
from shardline_jax.protocol import write_frame
out = _protocol_stdout()
print("stray print")
os.write(1, b"stray write to fd 1\\n")
write_frame(out, {"type": "bye"})
"""
    done = subprocess.run(
        [sys.executable, "-c", script], env=child_env(), capture_output=True, timeout=60, check=True
    )
    frame = read_frame(io.BytesIO(done.stdout))
    assert frame is not None and frame.type == "bye"
    assert len(done.stdout) == 16 + len(b'{"type":"bye"}')
    assert b"stray print" in done.stderr and b"stray write to fd 1" in done.stderr


def test_failures_are_classified_into_protocol_codes() -> None:
    from shardline_jax.errors import ExtractorError
    from shardline_jax.server import classify

    xla_oom = RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 2.00GiB")
    for e, code, retryable in (
        (MemoryError(), "RESOURCE_EXHAUSTED", True),
        (xla_oom, "RESOURCE_EXHAUSTED", True),
        (RuntimeError("CUDA error: out of memory"), "RESOURCE_EXHAUSTED", True),
        (ValueError("a bug"), "INTERNAL", True),
        (ExtractorError("INVALID_INPUT", "bad"), "INVALID_INPUT", False),
        (ExtractorError("MODEL", "bad"), "MODEL", False),
    ):
        got = classify(e)
        assert (got.code, got.retryable) == (code, retryable), e
    assert "Out of memory while trying to allocate 2.00GiB" in classify(xla_oom).message
