"""The JAX backend: one replica of the weights per local device, the batch split across them.

Every local device (each TPU chip, each GPU) joins a 1-D mesh named `data`. Parameters are
replicated (`PartitionSpec()`), tokens and outputs are split on the batch axis
(`PartitionSpec("data")`), and both programs run under `shard_map`: each device computes its
own sequences and gathers its own rows, with no communication between devices. Only the
gathered rows (cast to the output dtype on the device) travel to the host.

Imported only when JAX is used; nothing here runs on the machines CI uses.

Attention: `xp` runs `model.attention` (the code numpy runs); `cudnn` calls
`jax.nn.dot_product_attention(implementation="cudnn")` (flash attention, no S×S scores in
memory). `auto` picks cudnn on GPUs for bfloat16 without a sliding window, else xp. A shape
that cuDNN refuses to compile falls back to xp for that shape, logged once.
"""

from __future__ import annotations

import logging
import time
from functools import partial
from typing import Any, Callable

import numpy as np

from . import model
from .backend import ForwardSpec
from .weights import Params

log = logging.getLogger("shardline_jax")


def _shard_map(f: Callable[..., Any], mesh: Any, in_specs: Any, out_specs: Any) -> Callable[..., Any]:
    """`jax.shard_map` (JAX >= 0.6) or the older `jax.experimental.shard_map`, replication checks off."""
    import jax

    if hasattr(jax, "shard_map"):
        try:
            return jax.shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)
        except TypeError:
            return jax.shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs)
    from jax.experimental.shard_map import shard_map

    return shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_rep=False)


def _cudnn_attention(q: Any, k: Any, v: Any, scale: float) -> Any:
    import jax

    return jax.nn.dot_product_attention(q, k, v, scale=scale, is_causal=True, implementation="cudnn")


def jax_ops(compute_dtype: str, output_dtype: str, fused_attention: bool) -> model.Ops:
    """`model.Ops` for jax.numpy: `lax.scan` over layers, float32 accumulation where asked."""
    import jax
    import jax.numpy as jnp

    return model.Ops(
        xp=jnp,
        compute_dtype=jnp.dtype(compute_dtype),
        output_dtype=jnp.dtype(output_dtype),
        scan=lambda body, carry, xs: jax.lax.scan(body, carry, xs),
        matmul_f32=lambda a, b: jnp.matmul(a, b, preferred_element_type=jnp.float32),
        fused_attention=_cudnn_attention if fused_attention else None,
    )


def choose_attention(requested: str, platform: str, spec: ForwardSpec) -> str:
    """`xp` or `cudnn` for `--attention auto|xp|cudnn` on `platform` (`gpu`, `tpu`, `cpu`)."""
    if requested != "auto":
        return requested
    fits = platform == "gpu" and spec.compute_dtype == "bfloat16" and spec.cfg.sliding_window is None
    return "cudnn" if fits else "xp"


class JaxBackend:
    """Runs `model.forward` / `model.gather_rows` on every local device (see the module doc)."""

    name = "jax"
    bucketed = True

    def __init__(self, spec: ForwardSpec, params: Params, attention: str = "auto") -> None:
        import jax
        from jax.sharding import Mesh, NamedSharding, PartitionSpec

        if spec.compute_dtype == "float32":
            # Without this, GPUs multiply float32 in TF32 and TPUs in bfloat16 passes.
            jax.config.update("jax_default_matmul_precision", "highest")
        local = jax.local_devices()
        self.num_shards = len(local)
        self.devices = [f"{d.platform}:{d.id} {d.device_kind}" for d in local]
        self.attention = choose_attention(attention, local[0].platform, spec)
        mesh = Mesh(np.array(local), ("data",))
        self._batch_sharding = NamedSharding(mesh, PartitionSpec("data"))
        started = time.perf_counter()
        self._params = jax.device_put(params, NamedSharding(mesh, PartitionSpec()))
        jax.block_until_ready(self._params)
        log.info("weights on %d device(s) in %.1f s", self.num_shards, time.perf_counter() - started)

        def programs(fused: bool) -> Callable[..., Any]:
            ops = jax_ops(spec.compute_dtype, spec.output_dtype, fused)
            fwd = partial(model.forward, ops, spec.cfg, spec.layers, spec.inv_freq)
            specs = (PartitionSpec(), PartitionSpec("data"))
            return jax.jit(_shard_map(fwd, mesh, specs, PartitionSpec(None, "data")))

        self._forward_xp = programs(False)
        self._forward_fused = programs(True) if self.attention == "cudnn" else None
        self._xp_shapes: set[tuple[int, ...]] = set()
        self._seen: set[tuple[int, ...]] = set()
        gather = partial(model.gather_rows, jax_ops(spec.compute_dtype, spec.output_dtype, False))
        gather_specs = (PartitionSpec(None, "data"), PartitionSpec("data"))
        self._gather = jax.jit(_shard_map(gather, mesh, gather_specs, PartitionSpec(None, "data")))

    def forward(self, tokens: np.ndarray) -> Any:
        import jax

        shape = tokens.shape
        placed = jax.device_put(tokens, self._batch_sharding)
        first = shape not in self._seen
        self._seen.add(shape)
        started = time.perf_counter()
        if self._forward_fused is not None and shape not in self._xp_shapes:
            try:
                out = self._forward_fused(self._params, placed)
            except Exception as e:  # cuDNN refuses some shapes at compile time
                if not first:
                    raise
                log.warning("cudnn attention failed for batch %s, using xp attention: %s", shape, e)
                self._xp_shapes.add(shape)
                out = self._forward_xp(self._params, placed)
        else:
            out = self._forward_xp(self._params, placed)
        if first:
            log.info("forward %d×%d compiled in %.1f s", shape[0], shape[1], time.perf_counter() - started)
        return out

    def gather(self, hidden: Any, index: np.ndarray) -> Any:
        import jax

        rows = self._gather(hidden, jax.device_put(index, self._batch_sharding))
        rows.copy_to_host_async()
        return rows

    def to_host(self, rows: Any) -> np.ndarray:
        return np.asarray(rows)
