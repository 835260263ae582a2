#!/usr/bin/env python3
"""Read a shardline activation part with numpy only (no safetensors, torch or shardline needed).

A part is two files written side by side:

  shard_000/part_00000.safetensors   tensors (safetensors format, little-endian)
      sample_offsets     int64   [n_samples + 1]  sample k = rows off[k]:off[k+1]
      sample_task_index  int64   [n_samples]      global task index of each sample
      token_positions    int32   [n_rows]         each row's position in its prompt
      token_ids          int32   [n_rows]         each row's token id
      stats.resid_post.{L}.mean / .m2   float64 [hidden]   this part's per-dimension
                         mean and sum of squared deviations; .count_norm float64 [2]:
                         rows and the sum of their L2 norms
      resid_post.{L}     float16 or float32 [n_rows, hidden], one per extracted layer L:
                         the residual stream after decoder layer L (pre final norm),
                         real tokens only (no padding); every token of each prompt, or
                         the positions chosen with `work --positions`
      __metadata__       format, format_version, model, layers, dtype, positions, ...
  shard_000/part_00000.index.jsonl   one JSON line per sample, line k = sample k:
      sample_id, task_index, task_id, kind, test_index, augmentation (hflip, rot90,
      color_map, train_order), n_tokens, n_rows, row_offset, train_examples_used,
      prompt_sha256 ...

Usage:
  python3 read_activations.py PART.safetensors                 # summary
  python3 read_activations.py PART.safetensors --sample 3 --layer 12
  python3 read_activations.py PART.safetensors --json          # everything as JSON (small parts)

As a library:
  from read_activations import load_part
  part = load_part("shard_000/part_00000.safetensors")
  x = part.sample(3, layer=12)          # np.ndarray [n_rows, hidden], memory-mapped
  part.positions(3)                     # which prompt positions those rows are
  part.index[3]["augmentation"]         # what produced it
  torch_tensor = torch.from_numpy(np.asarray(x, dtype=np.float32))   # for torch users

With the `safetensors` package installed, safetensors.numpy.load_file / safetensors.torch.load_file
read the same files.
"""

import argparse
import json
import os
import struct
import sys

import numpy as np

DTYPES = {
    "F16": np.float16, "F32": np.float32, "F64": np.float64,
    "I32": np.int32, "I64": np.int64, "BF16": None,
}
FORMAT_VERSIONS = ("2",)


class Part:
    """One part: memory-mapped tensors, metadata and the sample index."""

    def __init__(self, path):
        if path.endswith(".index.jsonl"):
            path = path[: -len(".index.jsonl")] + ".safetensors"
        self.path = path
        with open(path, "rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(header_len).decode("utf-8"))
        self.data_start = 8 + header_len
        if self.data_start % 8 != 0:
            raise ValueError(f"{path}: data does not start at a multiple of 8")
        self.metadata = header.pop("__metadata__", {})
        version = self.metadata.get("format_version")
        if version not in FORMAT_VERSIONS:
            raise ValueError(f"{path}: part format version {version!r}; this reader knows {FORMAT_VERSIONS}")
        size = os.path.getsize(path)
        self.tensors = {}
        end_prev = 0
        for name, entry in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
            begin, end = entry["data_offsets"]
            if begin != end_prev:
                raise ValueError(f"{path}: tensor {name} does not follow the previous one")
            end_prev = end
            dtype = DTYPES.get(entry["dtype"])
            if dtype is None:
                raise ValueError(f"{path}: tensor {name} has dtype {entry['dtype']} (numpy cannot hold it)")
            shape = tuple(entry["shape"])
            count = int(np.prod(shape)) if shape else 1
            if count * np.dtype(dtype).itemsize != end - begin:
                raise ValueError(f"{path}: tensor {name} size does not match its shape")
            if count == 0:
                self.tensors[name] = np.zeros(shape, dtype=dtype)
            else:
                self.tensors[name] = np.memmap(
                    path, dtype=np.dtype(dtype).newbyteorder("<"), mode="r",
                    offset=self.data_start + begin, shape=shape,
                )
        if self.data_start + end_prev != size:
            raise ValueError(f"{path}: {size - self.data_start - end_prev} bytes after the last tensor")

        index_path = path[: -len(".safetensors")] + ".index.jsonl"
        self.index = []
        if os.path.exists(index_path):
            with open(index_path, "r", encoding="utf-8") as f:
                self.index = [json.loads(line) for line in f if line.strip()]
        self.offsets = np.asarray(self.tensors["sample_offsets"], dtype=np.int64)
        self.layers = json.loads(self.metadata.get("layers", "[]"))
        self._check()

    def _check(self):
        n = len(self.offsets) - 1
        if self.index and len(self.index) != n:
            raise ValueError(f"{self.path}: index has {len(self.index)} lines for {n} samples")
        for k, rec in enumerate(self.index):
            if rec["row_offset"] != self.offsets[k] or rec["n_rows"] != self.offsets[k + 1] - self.offsets[k]:
                raise ValueError(f"{self.path}: index line {k} disagrees with sample_offsets")
        n_rows = int(self.offsets[-1]) if n >= 0 else 0
        for name in ("token_ids", "token_positions"):
            if self.tensors[name].shape != (n_rows,):
                raise ValueError(f"{self.path}: {name} has {self.tensors[name].shape}, expected ({n_rows},)")
        for layer in self.layers:
            t = self.tensors[f"resid_post.{layer}"]
            if t.shape[0] != n_rows:
                raise ValueError(f"{self.path}: resid_post.{layer} has {t.shape[0]} rows, expected {n_rows}")

    @property
    def n_samples(self):
        return len(self.offsets) - 1

    def rows(self, k):
        """Row range [start, end) of sample k in token_ids, token_positions and every resid_post tensor."""
        return int(self.offsets[k]), int(self.offsets[k + 1])

    def sample(self, k, layer):
        """Activations of sample k at a layer: [n_rows, hidden] (a memory-mapped view)."""
        start, end = self.rows(k)
        return self.tensors[f"resid_post.{layer}"][start:end]

    def tokens(self, k):
        """Token ids of sample k's stored rows."""
        start, end = self.rows(k)
        return self.tensors["token_ids"][start:end]

    def positions(self, k):
        """Prompt positions of sample k's stored rows (0..n_tokens-1 when all are stored)."""
        start, end = self.rows(k)
        return self.tensors["token_positions"][start:end]

    def stats(self, layer):
        """This part's statistics of a layer: dict(count, mean, var, mean_norm)."""
        name = f"stats.resid_post.{layer}"
        count, norm_sum = (float(v) for v in self.tensors[f"{name}.count_norm"])
        mean = np.asarray(self.tensors[f"{name}.mean"])
        var = np.asarray(self.tensors[f"{name}.m2"]) / count if count else np.zeros_like(mean)
        return {"count": int(count), "mean": mean, "var": var,
                "mean_norm": norm_sum / count if count else 0.0}


def load_part(path):
    """Opens a part by its .safetensors (or .index.jsonl) path."""
    return Part(path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("part", help="PART.safetensors (or PART.index.jsonl)")
    ap.add_argument("--sample", type=int, help="print one sample's activations")
    ap.add_argument("--layer", type=int, help="layer for --sample (default: the first)")
    ap.add_argument("--json", action="store_true", help="dump everything as JSON (for small parts)")
    args = ap.parse_args(argv)
    part = load_part(args.part)

    if args.json:
        out = {
            "metadata": part.metadata,
            "index": part.index,
            "tensors": {
                name: {"dtype": str(t.dtype), "shape": list(t.shape), "values": np.asarray(t).astype(np.float64 if t.dtype.kind == "f" else np.int64).ravel().tolist()}
                for name, t in part.tensors.items()
            },
            "samples": [
                {"tokens": part.tokens(k).tolist(), "positions": part.positions(k).tolist(), "layers": {str(l): part.sample(k, l).astype(np.float64).tolist() for l in part.layers}}
                for k in range(part.n_samples)
            ],
        }
        json.dump(out, sys.stdout)
        return 0

    if args.sample is not None:
        layer = args.layer if args.layer is not None else part.layers[0]
        x = part.sample(args.sample, layer)
        rec = part.index[args.sample] if part.index else {}
        print(f"sample {args.sample} ({rec.get('sample_id', '?')}, task {rec.get('task_id', '?')}) layer {layer}: shape {x.shape} {x.dtype}")
        print(np.asarray(x, dtype=np.float32))
        return 0

    md = part.metadata
    print(f"{part.path}")
    print(f"  model {md.get('model', '?')}  hook {md.get('hook_point', '?')}  dtype {md.get('dtype', '?')}  layers {part.layers}")
    print(f"  positions {md.get('positions', 'all')}  backend {md.get('backend', '?')}")
    print(f"  samples {part.n_samples}  tokens {md.get('n_tokens', '?')}  rows {int(part.offsets[-1])}  tasks {md.get('first_task_index', '?')}..{md.get('last_task_index', '?')}")
    skipped = json.loads(md.get("skipped", "[]"))
    if skipped:
        print(f"  skipped {len(skipped)}: " + ", ".join(f"task {s['task_index']} ({s['reason']})" for s in skipped[:5]))
    for name, t in part.tensors.items():
        print(f"  {name:24s} {str(t.dtype):8s} {list(t.shape)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
