"""Errors with a stable code, as they travel in the protocol's `error` frames.

`ExtractorError` is what a request or the start-up answers with; `ProtocolError` means the
stream itself is broken (wrong magic, an oversized header, an array past its payload) and no
answer can be trusted any more: the server stops.
"""

from __future__ import annotations

from typing import Literal

ErrorCode = Literal["INVALID_INPUT", "MODEL", "RESOURCE_EXHAUSTED", "UNSUPPORTED_VERSION", "INTERNAL"]

ERROR_CODES: tuple[ErrorCode, ...] = (
    "INVALID_INPUT",
    "MODEL",
    "RESOURCE_EXHAUSTED",
    "UNSUPPORTED_VERSION",
    "INTERNAL",
)


def is_retryable(code: ErrorCode) -> bool:
    """Whether the same request may succeed when sent again (to this child or a fresh one).

    Memory pressure and internal faults may pass; a bad request, a bad model or a version
    mismatch never will.
    """
    return code in ("RESOURCE_EXHAUSTED", "INTERNAL")


class ExtractorError(Exception):
    """A failure answered with an `error` frame: `code` is one of `ERROR_CODES`."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message

    @property
    def retryable(self) -> bool:
        """See `is_retryable`."""
        return is_retryable(self.code)


class ProtocolError(Exception):
    """The byte stream is not the protocol (garbage, truncation, a frame that lies about its sizes)."""
