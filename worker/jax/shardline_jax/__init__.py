"""shardline_jax: the shardline extractor in JAX (TPU, GPU) or numpy.

Serves the extractor protocol (docs/extractor-protocol.md) on stdin/stdout:
`python3 -m shardline_jax [--array jax|numpy]`. The forward pass (`model.py`) is written once
against an array namespace, so numpy runs the very functions JAX compiles.
"""

PROTOCOL_NAME = "shardline-extractor"
"""The protocol's name, sent in `init` and `ready`."""

PROTOCOL_VERSION = 1
"""The protocol version this package speaks."""

__all__ = ["PROTOCOL_NAME", "PROTOCOL_VERSION"]
