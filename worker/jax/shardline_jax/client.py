"""The parent's side of the protocol, in Python: start a child, `init`, `extract`, `shutdown`.

The worker's own client is TypeScript; this one drives the child from the tests and from the
device check (bench/device), which has no Node.
"""

from __future__ import annotations

import subprocess
from typing import IO, Any, BinaryIO, Sequence, cast

import numpy as np

from . import PROTOCOL_NAME, PROTOCOL_VERSION
from .protocol import Frame, read_frame, write_frame


def extract_arrays(
    sequences: Sequence[Sequence[int]], positions: Sequence[Sequence[int]] | None = None
) -> list[tuple[str, np.ndarray]]:
    """The arrays of an `extract` frame for token-id sequences (and, optionally, positions)."""
    arrays = [
        ("token_ids", np.concatenate([np.asarray(s, dtype=np.int32) for s in sequences] or [np.zeros(0, np.int32)])),
        ("lengths", np.array([len(s) for s in sequences], dtype=np.int32)),
    ]
    if positions is not None:
        flat = [np.asarray(p, dtype=np.int32) for p in positions]
        arrays.append(("positions", np.concatenate(flat or [np.zeros(0, np.int32)]).astype(np.int32)))
        arrays.append(("position_counts", np.array([len(p) for p in positions], dtype=np.int32)))
    return arrays


def rows_by_sequence(frame: Frame, layer: int) -> list[np.ndarray]:
    """A `result` frame's rows of `layer`, split per sequence."""
    counts = frame.arrays["row_counts"]
    rows = frame.arrays[f"resid_post.{layer}"]
    bounds = np.concatenate([[0], np.cumsum(counts)])
    return [rows[bounds[k] : bounds[k + 1]] for k in range(len(counts))]


class ExtractorProcess:
    """A child extractor speaking frames on its stdin/stdout."""

    def __init__(self, command: Sequence[str], env: dict[str, str] | None = None, stderr: IO[Any] | None = None) -> None:
        self.proc = subprocess.Popen(
            list(command), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, env=env
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin = cast(BinaryIO, self.proc.stdin)
        self.stdout = cast(BinaryIO, self.proc.stdout)

    def send(self, header: dict[str, Any], arrays: Sequence[tuple[str, np.ndarray]] = ()) -> None:
        """Writes one frame to the child."""
        write_frame(self.stdin, header, arrays)

    def receive(self) -> Frame | None:
        """Reads the child's next frame (None when it closed stdout)."""
        return read_frame(self.stdout)

    def init(
        self,
        model_path: str,
        layers: list[int] | None = None,
        compute_dtype: str = "float32",
        output_dtype: str = "float32",
        max_batch_size: int = 8,
        max_batch_tokens: int = 4096,
        max_seq_length: int = 512,
        versions: Sequence[int] = (PROTOCOL_VERSION,),
    ) -> Frame | None:
        """Sends `init`; returns the child's answer (`ready` or `error`)."""
        self.send(
            {
                "type": "init",
                "protocol": PROTOCOL_NAME,
                "versions": list(versions),
                "model_path": model_path,
                "layers": layers,
                "compute_dtype": compute_dtype,
                "output_dtype": output_dtype,
                "max_batch_size": max_batch_size,
                "max_batch_tokens": max_batch_tokens,
                "max_seq_length": max_seq_length,
            }
        )
        return self.receive()

    def send_extract(
        self, request_id: int, sequences: Sequence[Sequence[int]], positions: Sequence[Sequence[int]] | None = None
    ) -> None:
        """Sends one `extract` (read its answer with `receive`; several may be in flight)."""
        self.send({"type": "extract", "id": request_id}, extract_arrays(sequences, positions))

    def shutdown(self, timeout_s: float = 60.0) -> tuple[Frame | None, int]:
        """Sends `shutdown`; returns the child's last frame (`bye`) and its exit status."""
        self.send({"type": "shutdown"})
        last = self.receive()
        return last, self.proc.wait(timeout=timeout_s)

    def close(self) -> None:
        """Closes the pipes and kills the child if it is still running."""
        for pipe in (self.stdin, self.stdout):
            try:
                pipe.close()
            except OSError:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
