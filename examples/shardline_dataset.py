#!/usr/bin/env python3
"""Iterate a whole shardline dataset with numpy only, from its _MANIFEST.json.

The dataset manifest lists the shards in order, each shard manifest its parts; parts are read
with read_activations.py (beside this file). Two ways through:

  ds = open_dataset("sharded_dataset")          # the dataset folder, its activations/, or gs://...
  for s in ds.samples(layers=[12]):             # task order: shards by id, parts, samples
      s.activations[12]                          # [n_rows, hidden]; s.positions, s.token_ids
      s.record["task_id"], s.record["augmentation"]

  for b in ds.batches(layer=12, batch_size=4096, shuffle_buffer=100_000, seed=0):
      b.x                                        # [batch_size, hidden] (the last batch may be smaller)
      b.sample, b.sample_id, b.task_index, b.position, b.token_id   # which row each one is

`sample` numbers samples 0, 1, ... in task order (the order of `samples()`). `worker=(i, n)`
reads only every n-th part from the i-th (for n DataLoader workers: together, every row once). With
`shuffle_buffer=N`, rows pass through a buffer of N rows and leave it in random order (each row
exactly once; the same seed gives the same order). Local folders are memory-mapped; gs:// needs
google-cloud-storage (each part is downloaded to a temporary folder while it is read).

Usage:
  python3 shardline_dataset.py DATASET                     # summary
  python3 shardline_dataset.py DATASET --layer 12 --batch_size 4096 --shuffle_buffer 100000 --seed 0
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections import namedtuple
from contextlib import contextmanager

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from read_activations import load_part  # noqa: E402

MANIFEST = "_MANIFEST.json"
MANIFEST_VERSIONS = (2,)
# Fixed width, so that blocks of different parts share one buffer: `TASK.TEST.AUG` fits in 40.
SAMPLE_ID_DTYPE = "U40"

Sample = namedtuple("Sample", "sample shard part record positions token_ids activations")
Sample.__doc__ = """One sample: its number in task order, where it is, its index line, its rows."""
Batch = namedtuple("Batch", "x sample sample_id task_index position token_id")
Batch.__doc__ = """Rows of one layer (x) and, per row, which sample and prompt position it is."""


class _LocalStore:
    """Files under a local folder."""

    def __init__(self, root):
        self.root = root

    def uri(self, key):
        return os.path.join(self.root, *key.split("/"))

    def read_text(self, key):
        with open(self.uri(key), "r", encoding="utf-8") as f:
            return f.read()

    def exists(self, key):
        return os.path.exists(self.uri(key))

    @contextmanager
    def part(self, key):
        yield load_part(self.uri(key + ".safetensors")), False


class _GcsStore:
    """Objects under gs://bucket/prefix, through google-cloud-storage."""

    def __init__(self, uri):
        try:
            from google.cloud import storage  # noqa: PLC0415 (optional dependency)
        except ImportError:
            raise ImportError(
                f"reading {uri} needs the google-cloud-storage package (pip install google-cloud-storage); "
                "or copy the outputs first: gcloud storage cp -r GS_URI LOCAL_DIR"
            ) from None
        bucket, _, prefix = uri[len("gs://"):].partition("/")
        self.bucket = storage.Client().bucket(bucket)
        self.prefix = prefix.strip("/")
        self.root = uri.rstrip("/")

    def _name(self, key):
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri(self, key):
        return f"{self.root}/{key}"

    def read_text(self, key):
        return self.bucket.blob(self._name(key)).download_as_bytes().decode("utf-8")

    def exists(self, key):
        return self.bucket.blob(self._name(key)).exists()

    @contextmanager
    def part(self, key):
        folder = tempfile.mkdtemp(prefix="shardline-part-")
        try:
            base = os.path.join(folder, os.path.basename(key))
            for suffix in (".safetensors", ".index.jsonl"):
                self.bucket.blob(self._name(key + suffix)).download_to_filename(base + suffix)
            yield load_part(base + ".safetensors"), True
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def _store_for(location):
    location = str(location)
    if location.startswith("gs://"):
        return _GcsStore(location)
    return _LocalStore(os.path.abspath(location))


class Dataset:
    """A finished dataset's outputs: its manifest, its shards' manifests, its parts in order."""

    def __init__(self, location):
        location = str(location)
        if location.rstrip("/").endswith(MANIFEST):
            location = location.rstrip("/")[: -len(MANIFEST)].rstrip("/") or "."
        store = _store_for(location)
        if not store.exists(MANIFEST) and store.exists("activations/" + MANIFEST):
            store = _store_for(store.uri("activations"))
        if not store.exists(MANIFEST):
            raise FileNotFoundError(
                f"{store.uri(MANIFEST)} does not exist: the dataset is not complete yet (every shard must be), "
                "or its outputs are elsewhere (pass the --output_dir that work wrote to)"
            )
        self.store = store
        self.manifest = json.loads(store.read_text(MANIFEST))
        if self.manifest.get("format") != "shardline.dataset-manifest":
            raise ValueError(
                f"{store.uri(MANIFEST)} is not a dataset manifest (format {self.manifest.get('format')!r}): "
                "pass the outputs folder that holds the shard_XXX folders"
            )
        if self.manifest.get("format_version") not in MANIFEST_VERSIONS:
            raise ValueError(
                f"{store.uri(MANIFEST)}: manifest version {self.manifest.get('format_version')!r}; "
                f"this reader knows {MANIFEST_VERSIONS}"
            )
        self.fingerprint = self.manifest["fingerprint"]
        self.layers = list(self.manifest["layers"])
        self.hidden_size = int(self.manifest["hidden_size"])
        self.shards = []
        for entry in sorted(self.manifest["shards"], key=lambda e: e["shard_id"]):
            key = entry["manifest"]
            if "://" in key or os.path.isabs(key):
                raise ValueError(f"{store.uri(MANIFEST)}: shard manifest {key} lies outside the outputs")
            shard = json.loads(store.read_text(key))
            shard["_dir"] = key.rsplit("/", 1)[0] if "/" in key else ""
            self.shards.append(shard)

    @property
    def n_samples(self):
        return int(self.manifest["samples"])

    @property
    def n_rows(self):
        """Rows of each layer."""
        return int(self.manifest["rows"])

    def part_keys(self, worker=None):
        """(shard_id, part_index, key, first_sample) of every part in task order (key has no
        extension; first_sample numbers its first sample in the whole dataset). With
        `worker=(i, n)`, only parts i, i + n, i + 2n, ...: n readers share a dataset."""
        index, count = worker if worker is not None else (0, 1)
        if not 0 <= index < count:
            raise ValueError(f"worker must be (index, count) with 0 <= index < count, got {worker}")
        number, k = 0, 0
        for shard in self.shards:
            # The manifest lists a shard's parts in task order; a shard split into work units
            # numbers each unit's parts from 0, so part_index alone does not order them.
            for part in shard["parts"]:
                key = f"{shard['_dir']}/{part['name']}" if shard["_dir"] else part["name"]
                if k % count == index:
                    yield shard["shard_id"], part["part_index"], key, number
                number += int(part["samples"])
                k += 1

    def _check_part(self, part, key):
        got = part.metadata.get("fingerprint")
        if got != self.fingerprint:
            raise ValueError(
                f"{self.store.uri(key)}.safetensors was written by another run (fingerprint {got}, "
                f"the dataset's {self.fingerprint}): run shardline verify"
            )

    def _layers(self, layers):
        wanted = self.layers if layers is None else [int(l) for l in layers]
        missing = [l for l in wanted if l not in self.layers]
        if missing:
            raise ValueError(f"layer(s) {missing} were not extracted; the dataset has layers {self.layers}")
        return wanted

    def samples(self, layers=None, worker=None):
        """Every sample in task order, with its rows of `layers` (default all): a Sample each.
        `worker=(i, n)`: only the samples of this reader's parts (see part_keys)."""
        layers = self._layers(layers)
        for shard_id, part_index, key, number in self.part_keys(worker):
            with self.store.part(key) as (part, remote):
                self._check_part(part, key)
                own = np.array if remote else (lambda a: a)  # a temporary file goes away
                for k in range(part.n_samples):
                    yield Sample(
                        sample=number,
                        shard=shard_id,
                        part=part_index,
                        record=part.index[k],
                        positions=own(part.positions(k)),
                        token_ids=own(part.tokens(k)),
                        activations={l: own(part.sample(k, l)) for l in layers},
                    )
                    number += 1

    def _row_blocks(self, layer, dtype, worker):
        """(x, sample, sample_id, task_index, position, token_id) per part, in task order."""
        for _, _, key, number in self.part_keys(worker):
            with self.store.part(key) as (part, _remote):
                self._check_part(part, key)
                counts = np.diff(part.offsets)
                n = part.n_samples
                sample = np.repeat(np.arange(number, number + n, dtype=np.int64), counts)
                ids = np.array([rec["sample_id"] for rec in part.index], dtype=SAMPLE_ID_DTYPE)
                yield (
                    np.array(part.tensors[f"resid_post.{layer}"], dtype=dtype),
                    sample,
                    np.repeat(ids, counts) if n else np.zeros(0, dtype=SAMPLE_ID_DTYPE),
                    np.repeat(np.asarray(part.tensors["sample_task_index"], dtype=np.int64), counts),
                    np.array(part.tensors["token_positions"], dtype=np.int32),
                    np.array(part.tensors["token_ids"], dtype=np.int32),
                )

    def batches(self, layer, batch_size, shuffle_buffer=0, seed=None, dtype=None, drop_last=False,
                worker=None):
        """Rows of one layer in batches of `batch_size` (see the module doc for shuffling), as
        `dtype` (default: as stored). `worker=(i, n)`: only this reader's parts (see part_keys)."""
        (layer,) = self._layers([layer])
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        blocks = self._row_blocks(layer, dtype, worker)
        if shuffle_buffer:
            blocks = _shuffled(blocks, int(shuffle_buffer), np.random.default_rng(seed))
        carry = None  # fewer than batch_size rows left over from the blocks before
        for block in blocks:
            cols = block if carry is None else tuple(np.concatenate(pair) for pair in zip(carry, block))
            start = 0
            while len(cols[0]) - start >= batch_size:
                yield Batch(*(c[start:start + batch_size] for c in cols))
                start += batch_size
            carry = tuple(c[start:] for c in cols)
        if carry is not None and len(carry[0]) and not drop_last:
            yield Batch(*carry)


def _shuffled(blocks, size, rng):
    """Rows of `blocks` through a buffer of `size` rows, leaving in random order, each once.

    Each row that arrives once the buffer is full takes part in a draw over the buffer and the
    rows arriving with it: as many rows leave as arrive, chosen without replacement, and the
    arrivals not chosen fill the places of the buffered rows that were. At the end the buffer
    leaves in a random permutation.
    """
    buffer = None
    filled = 0
    for block in blocks:
        at = 0
        n = len(block[0])
        if buffer is None:
            buffer = [np.empty((size,) + c.shape[1:], dtype=c.dtype) for c in block]
        if filled < size:
            take = min(size - filled, n)
            for b, c in zip(buffer, block):
                b[filled:filled + take] = c[:take]
            filled += take
            at = take
        if at == n:
            continue
        arriving = [c[at:] for c in block]
        m = n - at
        chosen = rng.choice(size + m, size=m, replace=False)
        leave_buffer = chosen < size
        out = [np.concatenate([b[chosen[leave_buffer]], a[chosen[~leave_buffer] - size]])
               for b, a in zip(buffer, arriving)]
        order = np.argsort(np.concatenate([np.flatnonzero(leave_buffer), np.flatnonzero(~leave_buffer)]))
        yield tuple(o[order] for o in out)
        stays = np.setdiff1d(np.arange(m), chosen[~leave_buffer] - size, assume_unique=True)
        for b, a in zip(buffer, arriving):
            b[chosen[leave_buffer]] = a[stays]
    if buffer is not None and filled:
        order = rng.permutation(filled)
        yield tuple(b[:filled][order] for b in buffer)


def open_dataset(location):
    """A Dataset from a dataset folder, its outputs folder, its _MANIFEST.json, or a gs:// URI."""
    return Dataset(location)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dataset", help="dataset folder, outputs folder, _MANIFEST.json or gs:// URI")
    ap.add_argument("--layer", type=int, help="stream this layer's rows in batches")
    ap.add_argument("--batch_size", type=int, default=4096)
    ap.add_argument("--shuffle_buffer", type=int, default=0, help="rows held for shuffling (0: task order)")
    ap.add_argument("--seed", type=int, help="makes the shuffle reproducible")
    args = ap.parse_args(argv)
    ds = open_dataset(args.dataset)
    m = ds.manifest
    print(f"{ds.store.uri(MANIFEST)}")
    print(f"  {m['num_shards']} shards, {m['parts']} parts, {m['samples']} samples, {m['rows']} rows per layer")
    print(f"  model {m['model']}, layers {ds.layers}, {m['dtype']}, positions {m['positions']}, fingerprint {ds.fingerprint}")
    if args.layer is None:
        return 0
    rows, batches, norms = 0, 0, 0.0
    for b in ds.batches(args.layer, args.batch_size, args.shuffle_buffer, args.seed, dtype=np.float32):
        rows += len(b.x)
        batches += 1
        norms += float(np.linalg.norm(b.x, axis=1).sum())
    print(f"  layer {args.layer}: {rows} rows in {batches} batches, mean norm {norms / max(rows, 1):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
