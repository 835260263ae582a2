"""`python3 -m shardline_jax [--array jax|numpy] [--attention auto|xp|cudnn] [--log-level info]`

Serves the extractor protocol on stdin/stdout (docs/extractor-protocol.md). stdout carries
frames only: the real stdout is kept for them and file descriptor 1 is pointed at stderr, so a
stray print (ours, JAX's, a C library's) can never corrupt the stream. Logs go to stderr.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
from typing import BinaryIO

from .server import serve

log = logging.getLogger("shardline_jax")


def _widen_pipes() -> None:
    """Asks Linux for 1 MiB pipe buffers on stdin/stdout (64 KiB by default): fewer system
    calls for result frames of hundreds of MB. Best effort: not a pipe, not Linux, no matter."""
    try:
        import fcntl

        for fd in (0, 1):
            fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
    except (ImportError, OSError):
        pass


def _protocol_stdout() -> BinaryIO:
    """The original stdout for frames; fd 1 and `sys.stdout` now lead to stderr."""
    fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(fd, "wb")


def main(argv: list[str] | None = None) -> int:
    """Parses flags and serves one session; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python3 -m shardline_jax", description=__doc__.splitlines()[2])
    parser.add_argument(
        "--array",
        choices=("jax", "numpy"),
        default=None,
        help="array library: jax (TPU/GPU/CPU, compiled) or numpy (host, float32). Default: jax when installed.",
    )
    parser.add_argument(
        "--attention",
        choices=("auto", "xp", "cudnn"),
        default="auto",
        help="JAX attention kernel: xp (the shared code numpy runs) or cudnn (flash); auto = cudnn on GPUs in bfloat16.",
    )
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="shardline_jax %(levelname)s %(message)s",
    )
    _widen_pipes()
    out = _protocol_stdout()
    array = args.array
    if array is None:
        array = "jax" if importlib.util.find_spec("jax") is not None else "numpy"
        if array == "numpy":
            log.info("jax is not installed: using numpy (float32, host CPU)")
    return serve(sys.stdin.buffer, out, array, args.attention)


if __name__ == "__main__":
    status = main()
    sys.stderr.flush()
    # Skip interpreter teardown: the reader thread may still be blocked reading stdin.
    os._exit(status)
