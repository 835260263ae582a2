#!/usr/bin/env python3
"""The JAX extractor on an NVIDIA GPU against transformers: accuracy, tokens/s, MFU, parts vs disk.

One command from the repository root on the device machine (Python with JAX+CUDA, PyTorch,
transformers, safetensors; no network, no Node), ≤ 10 minutes:

    PYTHONPATH=worker/jax python3 bench/device/check.py --out $OUT

Writes $OUT/results.json, $OUT/results.md and $OUT/children.log (the extractors' stderr).
What each figure means: bench/device/README.md. Every step is guarded: a failure is recorded
with its traceback and the next step runs; results are rewritten after every step, so a run
cut short still leaves what it measured.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "worker" / "jax"))

from shardline_jax.client import ExtractorProcess  # noqa: E402
from shardline_jax.protocol import Frame  # noqa: E402

# The model: Qwen2.5-0.5B's shape, random weights.
SHAPE: dict[str, Any] = dict(
    vocab_size=151936,
    hidden_size=896,
    intermediate_size=4864,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    max_position_embeddings=32768,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
    use_sliding_window=False,
)
ROPE_THETA = 1e6
LAYERS = SHAPE["num_hidden_layers"]
HIDDEN = SHAPE["hidden_size"]
ONE_LAYER = LAYERS - 1  # the last: the same compute as all layers, 1/24 of the output

ACCURACY_LENGTHS = (512, 300, 77, 1)  # one padded batch for the extractor, one by one for transformers
THROUGHPUT_SHAPES = ((32, 512), (16, 1024), (8, 2048))  # batch × sequence, 16384 tokens each
LIMITS: dict[str, int] = dict(max_batch_size=32, max_batch_tokens=16384, max_seq_length=2048)

FP32_TOLERANCE = 1e-4  # max |jax - hf| / rms(hf), per layer
BF16_VS_HF_FP32_FACTOR = 1.25  # jax bf16's error vs transformers fp32 ≤ this × transformers bf16's own
BF16_VS_HF_BF16_MAX = 5e-2  # and rms(jax bf16 - hf bf16) / rms(hf) below this (README: why)
PEAK_SPEC_FLOPS = 989e12  # H200 SXM dense bf16, spec sheet
PEAK_MEASURED_FLOPS = 790e12  # 8192³ bf16 matmul measured on this machine kind (device library)
CPU_TOKENS_PER_S = 136.1  # bench/README.md, extract: onnxruntime-node, 2 threads, 1 × 512
TIMED_S = 6.0  # timed part of each throughput measurement
EXTRACTOR_ARRAY = "jax"  # the children's --array

START = time.perf_counter()


def elapsed_s() -> float:
    return time.perf_counter() - START


def say(message: str) -> None:
    print(f"[{elapsed_s():6.1f}s] {message}", flush=True)


class Run:
    """Results of every step, rewritten to $OUT after each one."""

    def __init__(self, out: Path, budget_s: float) -> None:
        self.out = out
        self.deadline = START + budget_s
        self.results: dict[str, Any] = {"steps": {}}

    def left_s(self) -> float:
        return self.deadline - time.perf_counter()

    def step(self, name: str, fn: Callable[[], dict[str, Any]], needs_s: float) -> dict[str, Any] | None:
        if self.left_s() < needs_s:
            say(f"skip {name}: {self.left_s():.0f} s left, needs ~{needs_s:.0f} s")
            self.results["steps"][name] = {"ok": False, "skipped": f"time budget ({self.left_s():.0f} s left)"}
            self.save()
            return None
        say(f"step {name}")
        began = time.perf_counter()
        record: dict[str, Any]
        try:
            figures = fn()
            record = {"ok": True, **figures}
        except Exception as e:
            say(f"step {name} FAILED: {type(e).__name__}: {e}")
            record = {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
        record["seconds"] = round(time.perf_counter() - began, 1)
        self.results["steps"][name] = record
        self.save()
        say(f"step {name} done in {record['seconds']} s: {'ok' if record['ok'] else 'failed'}")
        return record if record["ok"] else None

    def save(self) -> None:
        self.results["elapsed_s"] = round(elapsed_s(), 1)
        (self.out / "results.json").write_text(json.dumps(self.results, indent=1, default=str))
        try:
            text = report(self.results)
        except Exception:
            text = f"report failed:\n{traceback.format_exc()}"
        (self.out / "results.md").write_text(text)


# ---------------------------------------------------------------- helpers


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def flops_per_token(seq: int) -> float:
    """2 × parameters in matmuls + attention 4 × layers × seq × hidden (QKᵀ and PV, full S×S)."""
    H, I, heads, kv = HIDDEN, SHAPE["intermediate_size"], SHAPE["num_attention_heads"], SHAPE["num_key_value_heads"]
    D = H // heads
    per_layer = H * (heads * D) + 2 * H * (kv * D) + (heads * D) * H + 3 * H * I
    return 2.0 * per_layer * LAYERS + 4.0 * LAYERS * seq * H


def tokens(batch: int, seq: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, SHAPE["vocab_size"], (batch, seq), dtype=np.int64).tolist()


def child_env(work: Path, fp32: bool) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "worker" / "jax"), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"  # torch shares the GPU in the parent
    env["JAX_COMPILATION_CACHE_DIR"] = str(work / "jax-cache")  # children reuse each other's programs
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    if fp32:
        env["JAX_DEFAULT_MATMUL_PRECISION"] = "highest"  # the extractor sets it for float32 too
    return env


class Child:
    """An extractor child with a watchdog: it is killed when its step's time is up."""

    def __init__(self, run: Run, work: Path, log: Path, fp32: bool, limit_s: float) -> None:
        self.log = log.open("a")
        self.log.write(f"\n===== child started at {elapsed_s():.1f} s (fp32={fp32}) =====\n")
        self.log.flush()
        command = [sys.executable, "-m", "shardline_jax", "--array", EXTRACTOR_ARRAY]
        self.proc = ExtractorProcess(command, env=child_env(work, fp32), stderr=self.log)
        self.timer = threading.Timer(max(5.0, min(limit_s, run.left_s())), self.proc.proc.kill)
        self.timer.daemon = True
        self.timer.start()

    def init(self, model: Path, layers: list[int] | None, compute: str, output: str) -> Frame:
        ready = self.proc.init(
            str(model), layers=layers, compute_dtype=compute, output_dtype=output,
            max_batch_size=LIMITS["max_batch_size"], max_batch_tokens=LIMITS["max_batch_tokens"],
            max_seq_length=LIMITS["max_seq_length"],
        )
        if ready is None or ready.type != "ready":
            raise RuntimeError(f"no ready: {ready.header if ready else 'child exited'}")
        return ready

    def extract(self, request_id: int, seqs: list[list[int]]) -> Frame:
        self.proc.send_extract(request_id, seqs)
        return self.answer(request_id)

    def answer(self, request_id: int) -> Frame:
        frame = self.proc.receive()
        if frame is None or frame.type != "result" or frame.header.get("id") != request_id:
            raise RuntimeError(f"request {request_id}: {frame.header if frame else 'child exited'}")
        return frame

    def close(self) -> None:
        """EOF on stdin: the child answers what it has and exits 0; the answers are drained."""
        try:
            self.proc.stdin.close()
            while self.proc.receive() is not None:
                pass
            self.proc.proc.wait(timeout=30)
        except Exception:
            pass
        finally:
            self.timer.cancel()
            self.proc.close()
            self.log.close()


def per_sequence(frame: Frame, layer: int) -> list[np.ndarray]:
    counts = frame.arrays["row_counts"]
    rows = frame.arrays[f"resid_post.{layer}"].astype(np.float32)
    bounds = np.concatenate([[0], np.cumsum(counts)])
    return [rows[bounds[k] : bounds[k + 1]] for k in range(len(counts))]


def more(began: float, started: int) -> bool:
    """Whether a timed loop starts another request: at least 3, at most 40, for ~6 seconds."""
    return started < 3 or (started < 40 and time.perf_counter() - began < TIMED_S)


def timed_requests(child: Child, batch: int, seq: int) -> dict[str, Any]:
    """Warm-up (compiles the shape), then requests with two in flight (pipelined)."""
    seqs = tokens(batch, seq, seed=batch * 7919 + seq)
    began = time.perf_counter()
    child.extract(0, seqs)
    first_s = time.perf_counter() - began
    began = time.perf_counter()
    sent = received = 0
    while sent < 2 and more(began, sent):
        sent += 1
        child.proc.send_extract(sent, seqs)
    while received < sent:
        received += 1
        child.answer(received)
        if more(began, sent):
            sent += 1
            child.proc.send_extract(sent, seqs)
    spent = time.perf_counter() - began
    figures: dict[str, Any] = {"first_request_s": round(first_s, 2), "requests": received,
                               "seconds": round(spent, 3), "tokens_per_s": received * batch * seq / spent}
    return figures


# ---------------------------------------------------------------- steps


class State:
    model_dir: Path
    work: Path
    out: Path
    hf: Any = None  # the transformers model (Qwen2ForCausalLM)
    ref_fp32: list[list[np.ndarray]]  # [sequence][layer] rows, float32
    ref_bf16: list[list[np.ndarray]]
    hf_bf16_error: list[float]  # per layer: rms(hf bf16 - hf fp32) / rms(hf fp32)
    seqs: list[list[int]]
    bf16_child: Child | None = None


def step_environment() -> dict[str, Any]:
    import importlib.metadata as md

    versions = {}
    for name in ("jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda12-plugin", "torch", "transformers", "safetensors", "numpy"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,clocks.max.sm,driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30,
        )
        gpu = smi.stdout.strip() or smi.stderr.strip()
    except (OSError, subprocess.SubprocessError) as e:
        gpu = f"nvidia-smi: {e}"
    return {
        "python": platform.python_version(),
        "versions": versions,
        "gpu": gpu,
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
    }


def step_model(s: State) -> dict[str, Any]:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(**SHAPE, rope_theta=ROPE_THETA)
    rope = getattr(config, "rope_parameters", None)  # transformers 5 keeps rope_theta in here
    if isinstance(rope, dict):
        rope["rope_theta"] = ROPE_THETA
    with torch.device("cuda"):
        model = Qwen2ForCausalLM(config).float()
    # Weights like the synthetic model's (synthetic/qwen2.ts): variance 1/fan_in,
    # so every layer moves the residual stream by O(1) and a wrong mask or rotation shows.
    g = torch.Generator(device="cuda").manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            u = torch.rand(p.shape, generator=g, device="cuda", dtype=torch.float32) * 2 - 1
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.2 * u)
            elif name.endswith(".bias"):
                p.copy_(0.5 * u)
            elif "embed_tokens" in name:
                p.copy_(math.sqrt(3) * u)
            else:
                p.copy_(math.sqrt(3 / p.shape[-1]) * u)
    model.eval()
    s.model_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(s.model_dir)
    s.hf = model
    figures: dict[str, Any] = {
        "files": sorted(p.name for p in s.model_dir.iterdir()),
        "bytes": sum(p.stat().st_size for p in s.model_dir.iterdir()),
        "config_json": json.loads((s.model_dir / "config.json").read_text()),
        "attn_implementation": str(getattr(model.config, "_attn_implementation", "?")),
    }
    try:  # diagnostics only: the extractor's own reading of the folder, and its RoPE frequencies
        from shardline_jax.config import load_config
        from shardline_jax.model import rope_inv_freq

        ours = load_config(s.model_dir)
        figures["parsed"] = {"rope_theta": ours.rope_theta, "head_dim": ours.head_dim, "qkv_bias": ours.qkv_bias}
        inv_hf = model.model.rotary_emb.inv_freq.detach().float().cpu().numpy()
        figures["inv_freq_max_rel_diff_vs_hf"] = float(np.max(np.abs(rope_inv_freq(ours) - inv_hf) / inv_hf))
        figures["hf_rope_theta_effective"] = float(inv_hf[1] ** (-(HIDDEN // SHAPE["num_attention_heads"]) / 2))
    except Exception as e:
        figures["diagnostics_error"] = f"{type(e).__name__}: {e}"
    return figures


def step_model_without_transformers(s: State) -> dict[str, Any]:
    """When transformers cannot build the model: the same shape and weight rules written with
    numpy, so that the extractor's throughput is still measured (no accuracy reference then)."""
    rng = np.random.default_rng(0)
    H, I, V = HIDDEN, SHAPE["intermediate_size"], SHAPE["vocab_size"]
    D = H // SHAPE["num_attention_heads"]
    q, kv = SHAPE["num_attention_heads"] * D, SHAPE["num_key_value_heads"] * D
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (V, H), "model.norm.weight": (H,)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (H,), p + "post_attention_layernorm.weight": (H,),
            p + "self_attn.q_proj.weight": (q, H), p + "self_attn.q_proj.bias": (q,),
            p + "self_attn.k_proj.weight": (kv, H), p + "self_attn.k_proj.bias": (kv,),
            p + "self_attn.v_proj.weight": (kv, H), p + "self_attn.v_proj.bias": (kv,),
            p + "self_attn.o_proj.weight": (H, q), p + "mlp.gate_proj.weight": (I, H),
            p + "mlp.up_proj.weight": (I, H), p + "mlp.down_proj.weight": (H, I),
        })
    header: dict[str, Any] = {}
    offset = 0
    for name, shape in shapes.items():
        n = 4 * math.prod(shape)
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    s.model_dir.mkdir(parents=True, exist_ok=True)
    with (s.model_dir / "model.safetensors").open("wb") as f:
        f.write(len(text).to_bytes(8, "little") + text)
        for name, shape in shapes.items():
            u = rng.uniform(-1, 1, shape).astype(np.float32)
            scale = 0.2 if name.endswith("norm.weight") else 0.5 if name.endswith(".bias") else (
                math.sqrt(3) if "embed_tokens" in name else math.sqrt(3 / shape[-1]))
            f.write(((1 if name.endswith("norm.weight") else 0) + scale * u).astype("<f4").tobytes())
    config = {"model_type": "qwen2", "hidden_act": "silu", "rope_theta": ROPE_THETA, **SHAPE}
    (s.model_dir / "config.json").write_text(json.dumps(config, indent=1))
    return {"bytes": sum(p.stat().st_size for p in s.model_dir.iterdir())}


def to_bfloat16(model: Any) -> dict[str, Any]:
    """`model.to(bfloat16)`, keeping the rotary inverse frequencies in float32.

    `Module.to(dtype)` also casts floating buffers; a bfloat16 `inv_freq` would turn position
    500 by up to a radian. Loading with `from_pretrained(dtype=bfloat16)` keeps it float32, and
    that is the reference wanted here.
    """
    import torch

    rotary = getattr(model.model, "rotary_emb", None)
    saved = {n: b.detach().clone() for n, b in rotary.named_buffers()} if rotary is not None else {}
    model.to(torch.bfloat16)
    cast = {}
    for name, buf in saved.items():
        cast[name] = str(getattr(rotary, name).dtype)
        setattr(rotary, name, buf)
    return {"rotary_buffers_after_to": cast}


def hf_residuals(model: Any, seq: list[int]) -> tuple[list[np.ndarray], bool]:
    """Layer outputs of transformers for one sequence: hidden_states[L+1], the last from a hook."""
    import torch

    captured: dict[str, Any] = {}

    def hook(_module: Any, _inputs: Any, output: Any) -> None:
        captured["last"] = output[0] if isinstance(output, tuple) else output

    handle = model.model.layers[LAYERS - 1].register_forward_hook(hook)
    try:
        with torch.inference_mode():
            ids = torch.tensor([seq], device="cuda")
            out = model.model(input_ids=ids, output_hidden_states=True)
    finally:
        handle.remove()
    hs = out.hidden_states
    layers = [hs[L + 1][0].float().cpu().numpy() for L in range(LAYERS - 1)]
    last = captured["last"][0].float().cpu().numpy()
    layers.append(last)
    final_is_pre_norm = bool(np.array_equal(hs[LAYERS][0].float().cpu().numpy(), last))
    return layers, final_is_pre_norm


def step_reference(s: State) -> dict[str, Any]:
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    rng = np.random.default_rng(1)
    s.seqs = [rng.integers(0, SHAPE["vocab_size"], n).tolist() for n in ACCURACY_LENGTHS]
    fp32 = [hf_residuals(s.hf, q) for q in s.seqs]
    s.ref_fp32 = [layers for layers, _ in fp32]
    cast = to_bfloat16(s.hf)
    bf16 = [hf_residuals(s.hf, q) for q in s.seqs]
    s.ref_bf16 = [layers for layers, _ in bf16]
    s.hf_bf16_error = [
        rms(np.concatenate([b[L] - f[L] for b, f in zip(s.ref_bf16, s.ref_fp32)]))
        / rms(np.concatenate([f[L] for f in s.ref_fp32]))
        for L in range(LAYERS)
    ]
    return {
        "lengths": list(ACCURACY_LENGTHS),
        "hf_hidden_states_last_is_pre_norm": fp32[0][1],
        "rms_by_layer": [round(rms(np.concatenate([f[L] for f in s.ref_fp32])), 4) for L in range(LAYERS)],
        "hf_bf16_vs_hf_fp32_rel_rms_by_layer": s.hf_bf16_error,
        "hf_bf16_vs_hf_fp32_rel_rms_max": max(s.hf_bf16_error),
        **cast,
    }


def compare(frame: Frame, ref: list[list[np.ndarray]]) -> tuple[list[float], list[float]]:
    """Per layer: max |d| / rms(ref) and rms(d) / rms(ref) over all sequences' rows."""
    max_rel, rms_rel = [], []
    for L in range(LAYERS):
        got = np.concatenate(per_sequence(frame, L))
        want = np.concatenate([r[L] for r in ref])
        d = got.astype(np.float64) - want
        scale = rms(want)
        max_rel.append(float(np.abs(d).max() / scale))
        rms_rel.append(rms(d) / scale)
    return max_rel, rms_rel


def step_jax_fp32(s: State, run: Run) -> dict[str, Any]:
    child = Child(run, s.work, s.out / "children.log", fp32=True, limit_s=180)
    try:
        ready = child.init(s.model_dir, None, "float32", "float32")
        began = time.perf_counter()
        frame = child.extract(1, s.seqs)
        first_s = time.perf_counter() - began
    finally:
        child.close()
    max_rel, rms_rel = compare(frame, s.ref_fp32)
    worst = int(np.argmax(max_rel))
    return {
        "ready": {k: ready.header.get(k) for k in ("backend", "devices", "attention", "load_ms", "model")},
        "first_request_s": round(first_s, 2),
        "max_abs_over_rms_by_layer": max_rel,
        "rel_rms_by_layer": rms_rel,
        "worst_layer": worst,
        "worst_max_abs_over_rms": max_rel[worst],
        "tolerance": FP32_TOLERANCE,
        "pass": max(max_rel) <= FP32_TOLERANCE,
    }


def step_jax_bf16(s: State, run: Run) -> dict[str, Any]:
    child = Child(run, s.work, s.out / "children.log", fp32=False, limit_s=run.left_s())
    try:
        ready = child.init(s.model_dir, None, "bfloat16", "float16")
        began = time.perf_counter()
        frame = child.extract(1, s.seqs)
        first_s = time.perf_counter() - began
    except Exception:
        child.close()
        raise
    s.bf16_child = child  # kept for the throughput step
    _, vs_bf16 = compare(frame, s.ref_bf16)
    _, vs_fp32 = compare(frame, s.ref_fp32)
    return {
        "ready": {k: ready.header.get(k) for k in ("backend", "devices", "attention", "load_ms", "buckets")},
        "first_request_s": round(first_s, 2),
        "rel_rms_vs_hf_bf16_by_layer": vs_bf16,
        "rel_rms_vs_hf_fp32_by_layer": vs_fp32,
        "worst_rel_rms_vs_hf_bf16": max(vs_bf16),
        "worst_rel_rms_vs_hf_fp32": max(vs_fp32),
        "hf_bf16_worst_rel_rms_vs_hf_fp32": max(s.hf_bf16_error),
        "tolerance": {"vs_hf_fp32_factor": BF16_VS_HF_FP32_FACTOR, "vs_hf_bf16_max": BF16_VS_HF_BF16_MAX},
        "pass": max(vs_fp32) <= BF16_VS_HF_FP32_FACTOR * max(s.hf_bf16_error) and max(vs_bf16) < BF16_VS_HF_BF16_MAX,
    }


def throughput_rows(child: Child, run: Run, label: str, n_layers: int) -> dict[str, Any]:
    rows = {}
    for batch, seq in THROUGHPUT_SHAPES:
        if run.left_s() < 45:
            rows[f"{batch}x{seq}"] = {"skipped": "time budget"}
            continue
        m = timed_requests(child, batch, seq)
        m.update(derived(m["tokens_per_s"], seq, n_layers))
        rows[f"{batch}x{seq}"] = m
        say(f"  {label} {batch}×{seq}: {m['tokens_per_s']:.0f} tokens/s, MFU {m['mfu_spec']:.1%}")
    return rows


def derived(tokens_per_s: float, seq: int, n_layers: int) -> dict[str, float]:
    flops = tokens_per_s * flops_per_token(seq)
    return {
        "tflops": flops / 1e12,
        "mfu_spec": flops / PEAK_SPEC_FLOPS,
        "mfu_measured_peak": flops / PEAK_MEASURED_FLOPS,
        "output_bytes_per_s": tokens_per_s * n_layers * HIDDEN * 2,
        "x_cpu_2_cores": tokens_per_s / CPU_TOKENS_PER_S,
    }


def step_jax_protocol_all(s: State, run: Run) -> dict[str, Any]:
    child, s.bf16_child = s.bf16_child, None  # the accuracy step's child, already warm
    fresh = child is None
    if child is None:
        child = Child(run, s.work, s.out / "children.log", fp32=False, limit_s=run.left_s())
    try:
        if fresh:
            child.init(s.model_dir, None, "bfloat16", "float16")
        return {"layers": LAYERS, "shapes": throughput_rows(child, run, "jax protocol, 24 layers", LAYERS)}
    finally:
        child.close()


def step_jax_protocol_one(s: State, run: Run) -> dict[str, Any]:
    child = Child(run, s.work, s.out / "children.log", fp32=False, limit_s=run.left_s())
    try:
        child.init(s.model_dir, [ONE_LAYER], "bfloat16", "float16")
        return {"layers": 1, "shapes": throughput_rows(child, run, f"jax protocol, layer {ONE_LAYER}", 1)}
    finally:
        child.close()


def step_jax_inprocess(s: State, run: Run) -> dict[str, Any]:
    """The same extractor without the pipe (a separate process: this one holds torch)."""
    result_path = s.work / "inprocess.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--role", "inprocess",
               "--model", str(s.model_dir), "--json", str(result_path), "--budget-s", str(max(10, run.left_s() - 60))]
    with (s.out / "children.log").open("a") as log:
        log.write(f"\n===== in-process run at {elapsed_s():.1f} s =====\n")
        log.flush()
        subprocess.run(command, env=child_env(s.work, fp32=False), stdout=log, stderr=log,
                       timeout=max(10, run.left_s() - 30), check=True)
    return json.loads(result_path.read_text())


def inprocess_main(model: Path, json_path: Path, budget_s: float) -> None:
    from shardline_jax.devices import JaxBackend
    from shardline_jax.extractor import Extractor, Limits

    deadline = time.perf_counter() + budget_s
    out: dict[str, Any] = {}
    for label, layers in (("all", None), ("one", [ONE_LAYER])):
        ex, _ = Extractor.open(model, layers, "bfloat16", "float16", Limits(**LIMITS),
                               lambda spec, params: JaxBackend(spec, params, "auto"))
        rows = {}
        for batch, seq in THROUGHPUT_SHAPES:
            if time.perf_counter() > deadline - 20:
                rows[f"{batch}x{seq}"] = {"skipped": "time budget"}
                continue
            seqs = np.array(tokens(batch, seq, seed=batch * 7919 + seq), dtype=np.int32)
            arrays = {"token_ids": seqs.reshape(-1), "lengths": np.full(batch, seq, dtype=np.int32)}
            began = time.perf_counter()
            ex.submit(arrays)()
            first_s = time.perf_counter() - began
            began = time.perf_counter()
            pending: list[Callable[[], Any]] = []
            started = done = 0
            while len(pending) < 2 and more(began, started):
                pending.append(ex.submit(arrays))
                started += 1
            while pending:
                pending.pop(0)()
                done += 1
                if more(began, started):
                    pending.append(ex.submit(arrays))
                    started += 1
            spent = time.perf_counter() - began
            n_layers = len(ex.layers)
            m: dict[str, Any] = {"first_request_s": round(first_s, 2), "requests": done,
                                 "seconds": round(spent, 3), "tokens_per_s": done * batch * seq / spent}
            m.update(derived(m["tokens_per_s"], seq, n_layers))
            rows[f"{batch}x{seq}"] = m
            print(f"in-process {label} {batch}x{seq}: {m['tokens_per_s']:.0f} tokens/s", flush=True)
        out[label] = {"layers": len(ex.layers), "attention": ex.backend.attention, "shapes": rows}
        del ex
    json_path.write_text(json.dumps(out, default=float))


def step_transformers(s: State, run: Run) -> dict[str, Any]:
    import torch

    model = s.hf  # bfloat16 since the reference step
    out: dict[str, Any] = {}
    for label, keep in (("all", None), ("one", ONE_LAYER + 1)):
        rows = {}
        for batch, seq in THROUGHPUT_SHAPES:
            if run.left_s() < 20:
                rows[f"{batch}x{seq}"] = {"skipped": "time budget"}
                continue
            ids = torch.tensor(tokens(batch, seq, seed=batch * 7919 + seq), device="cuda")

            def once() -> None:
                with torch.inference_mode():
                    hs = model.model(input_ids=ids, output_hidden_states=True).hidden_states
                    if keep is None:
                        [h.to("cpu") for h in hs[1:]]
                    else:
                        hs[keep].to("cpu")

            began = time.perf_counter()
            once()
            torch.cuda.synchronize()
            first_s = time.perf_counter() - began
            began = time.perf_counter()
            done = 0
            while more(began, done):
                once()
                done += 1
            torch.cuda.synchronize()
            spent = time.perf_counter() - began
            m: dict[str, Any] = {"first_request_s": round(first_s, 2), "requests": done,
                                 "seconds": round(spent, 3), "tokens_per_s": done * batch * seq / spent}
            m.update(derived(m["tokens_per_s"], seq, LAYERS if keep is None else 1))
            rows[f"{batch}x{seq}"] = m
            say(f"  transformers {label} {batch}×{seq}: {m['tokens_per_s']:.0f} tokens/s, MFU {m['mfu_spec']:.1%}")
        out[label] = {"layers": LAYERS if keep is None else 1, "shapes": rows}
    out["attn_implementation"] = str(getattr(model.config, "_attn_implementation", "?"))
    return out


def step_disk(s: State) -> dict[str, Any]:
    """Host write rate of a 1 GB file: write() calls alone (page cache) and through fsync."""
    path = s.work / "write-test.bin"
    chunk = np.random.default_rng(2).integers(0, 256, 64 << 20, dtype=np.uint8).tobytes()
    total = 16 * len(chunk)  # 1 GiB
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        began = time.perf_counter()
        for _ in range(16):
            os.write(fd, chunk)
        written_s = time.perf_counter() - began
        os.fsync(fd)
        synced_s = time.perf_counter() - began
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return {"bytes": total, "path": str(s.work), "write_bytes_per_s": total / written_s,
            "fsync_bytes_per_s": total / synced_s}


# ---------------------------------------------------------------- report


def _row(step: dict[str, Any] | None, shape: str) -> dict[str, Any] | None:
    if not step or not step.get("ok"):
        return None
    r = step.get("shapes", {}).get(shape)
    return r if r and "tokens_per_s" in r else None


def report(results: dict[str, Any]) -> str:
    st = results["steps"]
    lines = ["# bench/device: JAX extractor vs transformers", ""]
    env = st.get("environment", {})
    if env.get("ok"):
        lines += [f"GPU: {env['gpu']}; CPUs {env['cpus']}; load {env['loadavg']}", f"versions: {env['versions']}", ""]
    lines += ["## Steps", "", "| step | ok | seconds | note |", "|---|---|---:|---|"]
    for name, r in st.items():
        note = r.get("skipped") or r.get("error", "")
        lines.append(f"| {name} | {r.get('ok')} | {r.get('seconds', '')} | {str(note)[:120]} |")
    lines += ["", "## (a) Accuracy against transformers (same GPU)", ""]
    fp32, bf16 = st.get("jax_fp32", {}), st.get("jax_bf16", {})
    if fp32.get("ok"):
        lines.append(
            f"- fp32 (TF32 off both sides): worst max|Δ|/RMS **{fp32['worst_max_abs_over_rms']:.2e}** "
            f"(layer {fp32['worst_layer']}), tolerance {fp32['tolerance']:.0e}: **{'pass' if fp32['pass'] else 'FAIL'}**"
        )
    if bf16.get("ok"):
        lines.append(
            f"- bf16 (fp16 output), worst layer's RMS(Δ)/RMS: against transformers fp32 **{bf16['worst_rel_rms_vs_hf_fp32']:.2e}**, "
            f"transformers' own bf16 against its fp32 {bf16['hf_bf16_worst_rel_rms_vs_hf_fp32']:.2e} "
            f"(tolerance: ≤ {BF16_VS_HF_FP32_FACTOR}× that); against transformers bf16 "
            f"**{bf16['worst_rel_rms_vs_hf_bf16']:.2e}** (tolerance < {BF16_VS_HF_BF16_MAX:.0e}): "
            f"**{'pass' if bf16['pass'] else 'FAIL'}**"
        )
    lines += ["", "## (b) Throughput, bf16, 16384 tokens per batch", "",
              f"MFU against {PEAK_SPEC_FLOPS / 1e12:.0f} TFLOP/s (spec) and {PEAK_MEASURED_FLOPS / 1e12:.0f} (measured matmul).", "",
              "| engine | layers out | batch × seq | tokens/s | TFLOP/s | MFU spec | MFU measured | × transformers | × CPU (2 cores) | output MB/s |",
              "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    inproc = st.get("jax_inprocess", {})
    hf = st.get("transformers", {})
    engines = [
        ("JAX, over the protocol", st.get("jax_protocol_all"), "all", LAYERS),
        ("JAX, over the protocol", st.get("jax_protocol_one"), "one", 1),
        ("JAX, in-process", inproc.get("all") if inproc.get("ok") else None, "all", LAYERS),
        ("JAX, in-process", inproc.get("one") if inproc.get("ok") else None, "one", 1),
        ("transformers", hf.get("all") if hf.get("ok") else None, "all", LAYERS),
        ("transformers", hf.get("one") if hf.get("ok") else None, "one", 1),
    ]
    for name, step, which, n_layers in engines:
        for batch, seq in THROUGHPUT_SHAPES:
            shape = f"{batch}x{seq}"
            r = _row({"ok": True, **step} if step else None, shape)
            if r is None:
                continue
            base = _row({"ok": True, **hf[which]} if hf.get("ok") else None, shape)
            ratio = f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}" if base else "-"
            lines.append(
                f"| {name} | {n_layers} | {batch} × {seq} | {r['tokens_per_s']:.0f} | {r['tflops']:.0f} | "
                f"{r['mfu_spec']:.1%} | {r['mfu_measured_peak']:.1%} | {ratio} | {r['x_cpu_2_cores']:.0f} | "
                f"{r['output_bytes_per_s'] / 1e6:.0f} |"
            )
    disk = st.get("disk", {})
    lines += ["", "## (c) Does writing parts keep up?", ""]
    if disk.get("ok"):
        lines.append(
            f"Host write of 1 GiB: {disk['write_bytes_per_s'] / 1e6:.0f} MB/s into the page cache, "
            f"{disk['fsync_bytes_per_s'] / 1e6:.0f} MB/s through fsync ({disk['path']})."
        )
        for name, step, which, n_layers in engines[:2]:
            for batch, seq in THROUGHPUT_SHAPES:
                r = _row({"ok": True, **step} if step else None, f"{batch}x{seq}")
                if r:
                    need = r["output_bytes_per_s"]
                    lines.append(
                        f"- {name}, {n_layers} layer(s), {batch} × {seq}: needs {need / 1e6:.0f} MB/s = "
                        f"{need / disk['fsync_bytes_per_s']:.2f}× the fsync'd disk rate"
                    )
    lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="results folder ($OUT)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "shardline-device-check")
    parser.add_argument("--budget-s", type=float, default=540.0, help="stop starting steps after this")
    parser.add_argument("--role", default="main", choices=("main", "inprocess"))
    parser.add_argument("--model", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.role == "inprocess":
        inprocess_main(args.model, args.json, args.budget_s)
        return 0
    if args.out is None:
        parser.error("--out is required")
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    run = Run(args.out, args.budget_s)

    def give_up() -> None:  # a step that hangs past the budget: keep what was measured
        say("hard time limit: saving results and exiting")
        run.save()
        os._exit(4)

    hard_stop = threading.Timer(args.budget_s + 40, give_up)
    hard_stop.daemon = True
    hard_stop.start()
    s = State()
    s.model_dir, s.work, s.out = args.work / "qwen2.5-0.5b-random", args.work, args.out
    run.step("environment", step_environment, 0)
    with_hf = run.step("model", lambda: step_model(s), 60) is not None
    have_model = with_hf or run.step("model_without_transformers", lambda: step_model_without_transformers(s), 60)
    if with_hf and run.step("reference", lambda: step_reference(s), 30):
        run.step("jax_fp32", lambda: step_jax_fp32(s, run), 90)
        run.step("jax_bf16", lambda: step_jax_bf16(s, run), 60)
    if have_model:
        run.step("jax_protocol_all", lambda: step_jax_protocol_all(s, run), 60)
        run.step("jax_protocol_one", lambda: step_jax_protocol_one(s, run), 60)
    if with_hf:
        run.step("transformers", lambda: step_transformers(s, run), 40)
    if have_model:
        run.step("jax_inprocess", lambda: step_jax_inprocess(s, run), 60)
    run.step("disk", lambda: step_disk(s), 10)
    print(report(run.results), flush=True)
    steps = run.results["steps"].values()
    return 0 if all(r.get("ok") for r in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
