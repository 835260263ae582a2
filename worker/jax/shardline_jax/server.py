"""The protocol server: `init` → `ready`, then `extract` → `result` | `error`, in request order.

Three threads: a reader parses frames from stdin into a queue (so requests keep arriving while
the device computes), the main thread starts each request and finishes the oldest, a writer
sends answers (so the next request's device work overlaps this answer's write). Up to
`PIPELINE_DEPTH` requests are in flight: with JAX the second one is already queued on the
device while the first one's rows travel to the host.

Exit status: 0 after `shutdown` or EOF; 1 when the start fails (an `error` with id null is sent
first); 2 when the parent speaks no version this child does; 3 when stdin is not the protocol.
"""

from __future__ import annotations

import importlib.util
import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np

from . import PROTOCOL_NAME, PROTOCOL_VERSION
from .backend import Backend, ForwardSpec, NumpyBackend
from .errors import ExtractorError, ProtocolError, is_retryable
from .extractor import Extractor, Limits, Result
from .protocol import Frame, error_header, read_frame, write_frame
from .weights import Params

log = logging.getLogger("shardline_jax")

PIPELINE_DEPTH = 2
"""Requests started before the oldest one's answer is collected."""

EXIT_OK, EXIT_START_FAILED, EXIT_UNSUPPORTED_VERSION, EXIT_PROTOCOL = 0, 1, 2, 3

Outgoing = tuple[dict[str, Any], list[tuple[str, np.ndarray]]]


@dataclass(frozen=True)
class Init:
    """A checked `init` message."""

    model_path: Path
    layers: list[int] | None
    compute_dtype: str
    output_dtype: str
    limits: Limits


def _field(header: dict[str, Any], key: str) -> Any:
    if key not in header:
        raise ExtractorError("INVALID_INPUT", f"init has no {key}")
    return header[key]


def _positive(header: dict[str, Any], key: str) -> int:
    value = _field(header, key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ExtractorError("INVALID_INPUT", f"init {key} must be a positive integer, got {value!r}")
    return value


def _choice(header: dict[str, Any], key: str, allowed: tuple[str, ...]) -> str:
    value = _field(header, key)
    if value not in allowed:
        raise ExtractorError("INVALID_INPUT", f"init {key} must be one of {', '.join(allowed)}, got {value!r}")
    return str(value)


def parse_init(header: dict[str, Any]) -> Init:
    """Checks an `init` header (the version was checked before). Fails with INVALID_INPUT."""
    path = _field(header, "model_path")
    if not isinstance(path, str) or not path:
        raise ExtractorError("INVALID_INPUT", f"init model_path must be a folder path, got {path!r}")
    if not Path(path).is_dir():
        raise ExtractorError("MODEL", f"model_path {path} is not a folder")
    layers = _field(header, "layers")
    if layers is not None and (
        not isinstance(layers, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in layers)
    ):
        raise ExtractorError("INVALID_INPUT", f"init layers must be null or a list of integers, got {layers!r}")
    return Init(
        model_path=Path(path),
        layers=layers,
        compute_dtype=_choice(header, "compute_dtype", ("float32", "bfloat16")),
        output_dtype=_choice(header, "output_dtype", ("float16", "float32")),
        limits=Limits(
            max_batch_size=_positive(header, "max_batch_size"),
            max_batch_tokens=_positive(header, "max_batch_tokens"),
            max_seq_length=_positive(header, "max_seq_length"),
        ),
    )


def speaks_our_version(header: dict[str, Any]) -> bool:
    """Whether an `init` names this protocol and offers a version this child speaks."""
    versions = header.get("versions")
    return (
        header.get("protocol") == PROTOCOL_NAME
        and isinstance(versions, list)
        and any(v == PROTOCOL_VERSION and not isinstance(v, bool) for v in versions)
    )


def backend_factory(array: str, attention: str) -> Callable[[ForwardSpec, Params], Backend]:
    """Builds the backend `--array` names (`jax` imports JAX here, not before)."""
    if array == "jax":
        if importlib.util.find_spec("jax") is None:
            raise ExtractorError("MODEL", "--array jax: jax is not installed (pip install 'shardline-jax[cuda]' or '[tpu]')")
        from .devices import JaxBackend

        return lambda spec, params: JaxBackend(spec, params, attention)
    return lambda spec, params: NumpyBackend(spec, params)


def ready_header(extractor: Extractor, init: Init, sha256: str, load_ms: int) -> dict[str, Any]:
    """The `ready` frame's header."""
    cfg, b = extractor.cfg, extractor.buckets
    return {
        "type": "ready",
        "protocol": PROTOCOL_NAME,
        "version": PROTOCOL_VERSION,
        "backend": extractor.backend.name,
        "model": {
            "model_type": cfg.model_type,
            "num_layers": cfg.num_layers,
            "hidden_size": cfg.hidden_size,
            "vocab_size": cfg.vocab_size,
            "num_attention_heads": cfg.num_heads,
            "num_key_value_heads": cfg.num_kv_heads,
            "weights_sha256": sha256,
        },
        "layers": list(extractor.layers),
        "compute_dtype": init.compute_dtype,
        "output_dtype": init.output_dtype,
        "devices": extractor.backend.devices,
        "max_batch_size": init.limits.max_batch_size,
        "max_batch_tokens": init.limits.max_batch_tokens,
        "max_seq_length": init.limits.max_seq_length,
        "attention": extractor.backend.attention,
        "buckets": {
            "padded": extractor.backend.bucketed,
            "seq": b.seq_rungs,
            "batch": b.batch_rungs,
            "forward_programs_max": b.forward_programs_bound(),
            "gather_programs_max": b.gather_programs_bound(),
        },
        "load_ms": load_ms,
    }


def classify(e: BaseException) -> ExtractorError:
    """Any failure of a request as an `ExtractorError` (out-of-memory → RESOURCE_EXHAUSTED)."""
    if isinstance(e, ExtractorError):
        return e
    text = f"{type(e).__name__}: {e}"
    if isinstance(e, MemoryError) or "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower():
        return ExtractorError("RESOURCE_EXHAUSTED", text)
    return ExtractorError("INTERNAL", text)


def _logged(request_id: int, e: Exception) -> ExtractorError:
    """Classifies a request's failure and logs it (with the traceback when it is a bug)."""
    err = classify(e)
    log.warning("request %d: %s %s", request_id, err.code, err.message, exc_info=err.code == "INTERNAL")
    return err


def _error_out(request_id: int | None, e: ExtractorError) -> Outgoing:
    return error_header(request_id, e.code, e.message, is_retryable(e.code)), []


class _Writer(threading.Thread):
    """Writes answers in the order given; remembers a failure (the parent went away)."""

    def __init__(self, stream: BinaryIO) -> None:
        super().__init__(name="writer", daemon=True)
        self.stream = stream
        self.queue: queue.Queue[Outgoing | None] = queue.Queue(maxsize=PIPELINE_DEPTH)
        self.failure: BaseException | None = None

    def run(self) -> None:
        while (item := self.queue.get()) is not None:
            if self.failure is None:
                try:
                    write_frame(self.stream, *item)
                except (OSError, ValueError) as e:
                    self.failure = e

    def finish(self) -> None:
        self.queue.put(None)
        self.join()


def _read_loop(stream: BinaryIO, incoming: queue.Queue[Frame | BaseException | None]) -> None:
    try:
        while (frame := read_frame(stream)) is not None:
            incoming.put(frame)
            if frame.type == "shutdown":
                return
        incoming.put(None)
    except BaseException as e:  # handed to the main thread, which decides
        incoming.put(e)


def _request_id(frame: Frame) -> int:
    rid = frame.header.get("id")
    if isinstance(rid, bool) or not isinstance(rid, int):
        raise ProtocolError(f"extract needs an integer id, got {rid!r}")
    return rid


def _result_out(request_id: int, extractor: Extractor, result: Result) -> Outgoing:
    header = {
        "type": "result",
        "id": request_id,
        "hidden_size": extractor.cfg.hidden_size,
        "layers": list(extractor.layers),
        "dtype": extractor.spec.output_dtype,
    }
    arrays = [("row_counts", result.row_counts.astype(np.int32, copy=False))]
    arrays += [(f"resid_post.{layer}", rows) for layer, rows in zip(extractor.layers, result.rows)]
    return header, arrays


def serve_requests(stdin: BinaryIO, stdout: BinaryIO, extractor: Extractor) -> int:
    """Answers `extract` frames until `shutdown`, EOF or a broken stream; returns the exit status."""
    incoming: queue.Queue[Frame | BaseException | None] = queue.Queue(maxsize=2 * PIPELINE_DEPTH)
    threading.Thread(target=_read_loop, args=(stdin, incoming), name="reader", daemon=True).start()
    writer = _Writer(stdout)
    writer.start()
    inflight: deque[Callable[[], Outgoing]] = deque()

    def finish_oldest() -> None:
        writer.queue.put(inflight.popleft()())

    def start(frame: Frame) -> None:
        rid = _request_id(frame)
        began = time.perf_counter()
        try:
            wait = extractor.submit(frame.arrays)
        except Exception as e:
            err = _logged(rid, e)
            inflight.append(lambda: _error_out(rid, err))
            return

        def collect() -> Outgoing:
            try:
                out = _result_out(rid, extractor, wait())
            except Exception as e:
                return _error_out(rid, _logged(rid, e))
            log.debug("request %d answered in %.3f s", rid, time.perf_counter() - began)
            return out

        inflight.append(collect)

    status = EXIT_OK
    while writer.failure is None:
        if inflight and (len(inflight) >= PIPELINE_DEPTH or incoming.empty()):
            finish_oldest()
            continue
        item = incoming.get()
        if item is None:
            break
        if isinstance(item, BaseException):
            log.error("stdin is not the protocol: %s", item)
            status = EXIT_PROTOCOL
            break
        if item.type == "extract":
            try:
                start(item)
            except ProtocolError as e:
                log.error("%s", e)
                status = EXIT_PROTOCOL
                break
        elif item.type == "shutdown":
            while inflight:
                finish_oldest()
            writer.queue.put(({"type": "bye"}, []))
            break
        else:
            log.error("unexpected %r frame after init", item.type)
            status = EXIT_PROTOCOL
            break
    while inflight and writer.failure is None:
        finish_oldest()
    if status == EXIT_PROTOCOL:
        writer.queue.put(_error_out(None, ExtractorError("INVALID_INPUT", "protocol error on stdin; exiting")))
    writer.finish()
    if writer.failure is not None:
        log.error("cannot write to stdout: %s", writer.failure)
        return EXIT_START_FAILED
    return status


def serve(stdin: BinaryIO, stdout: BinaryIO, array: str, attention: str = "auto") -> int:
    """The whole session on `array` (`jax` or `numpy`): the handshake, then `serve_requests`.

    Returns the exit status.
    """
    try:
        first = read_frame(stdin)
    except ProtocolError as e:
        log.error("stdin is not the protocol: %s", e)
        write_frame(stdout, *_error_out(None, ExtractorError("INVALID_INPUT", f"protocol error: {e}")))
        return EXIT_PROTOCOL
    if first is None:
        log.info("stdin closed before init")
        return EXIT_OK
    if first.type != "init":
        log.error("the first frame must be init, got %r", first.type)
        write_frame(stdout, *_error_out(None, ExtractorError("INVALID_INPUT", "the first frame must be init")))
        return EXIT_PROTOCOL
    if not speaks_our_version(first.header):
        message = (
            f"this extractor speaks {PROTOCOL_NAME} version {PROTOCOL_VERSION}; init offered "
            f"protocol {first.header.get('protocol')!r} versions {first.header.get('versions')!r}"
        )
        log.error("%s", message)
        write_frame(stdout, *_error_out(None, ExtractorError("UNSUPPORTED_VERSION", message)))
        return EXIT_UNSUPPORTED_VERSION
    started = time.perf_counter()
    try:
        init = parse_init(first.header)
        if array == "numpy" and init.compute_dtype == "bfloat16":
            raise ExtractorError(
                "INVALID_INPUT", "compute_dtype bfloat16 needs --array jax (numpy has no bfloat16 arithmetic)"
            )
        extractor, sha = Extractor.open(
            init.model_path,
            init.layers,
            init.compute_dtype,
            init.output_dtype,
            init.limits,
            backend_factory(array, attention),
        )
    except Exception as e:
        err = classify(e)
        if err.code == "INTERNAL":
            log.exception("start failed")
        log.error("start failed: %s %s", err.code, err.message)
        write_frame(stdout, *_error_out(None, err))
        return EXIT_START_FAILED
    load_ms = round((time.perf_counter() - started) * 1000)
    write_frame(stdout, ready_header(extractor, init, sha, load_ms))
    log.info(
        "ready: %s %s, layers %s, %s on %s, %d ms",
        extractor.cfg.model_type,
        init.model_path,
        list(extractor.layers),
        init.compute_dtype,
        ", ".join(extractor.backend.devices),
        load_ms,
    )
    return serve_requests(stdin, stdout, extractor)
