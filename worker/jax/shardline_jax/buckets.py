"""Shape buckets: every request runs in one of a bounded set of padded shapes.

JAX compiles one program per input shape, so shapes are rounded up to rungs of a ladder:

- sequence length S: 32·{1, 1.5, 2, 3, 4, 6, 8, ...} (each power of two and the midpoint
  above it), up to the first rung >= max_seq_length: at most 1.5x padding, and
  1 + 2·ceil(log2(max_seq_length / 32)) rungs (13 for 2048, 21 for 32768);
- batch B: d·{1, 2, 4, ...} for d local devices, up to the first rung >= max_batch_size, so
  the batch always splits evenly across devices: 1 + ceil(log2(ceil(max_batch_size / d))) rungs;
- rows gathered per device R (the second, small program that picks the requested rows out of
  the device's output before transfer): 8·{1, 1.5, 2, 3, ...}, capped at (B/d)·S.

Forward programs (the expensive compiles) <= |S rungs| · |B rungs|; gather programs
<= |S rungs| · |B rungs| · |R rungs for (max B/d)·(max S)|. `Buckets.forward_programs_bound`
and `gather_programs_bound` compute them.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass, field

SEQ_MIN = 32
"""Smallest padded sequence length."""

ROWS_MIN = 8
"""Smallest padded row count per device."""


def ladder(minimum: int, maximum: int) -> list[int]:
    """`minimum·{1, 1.5, 2, 3, 4, 6, ...}` up to and including the first rung >= `maximum`."""
    if minimum < 2 or minimum % 2:
        raise ValueError(f"ladder minimum must be an even number >= 2, got {minimum}")
    rungs: list[int] = []
    base = minimum
    while True:
        for rung in (base, base * 3 // 2):
            rungs.append(rung)
            if rung >= maximum:
                return rungs
        base *= 2


def _pick(rungs: list[int], value: int, what: str) -> int:
    at = bisect_left(rungs, value)
    if at == len(rungs):
        raise ValueError(f"{what} {value} exceeds the largest bucket {rungs[-1]}")
    return rungs[at]


@dataclass(frozen=True)
class Buckets:
    """The ladders for one session's limits and device count."""

    max_batch_size: int
    max_seq_length: int
    num_devices: int
    seq_rungs: list[int] = field(init=False)
    batch_rungs: list[int] = field(init=False)

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_seq_length", "num_devices"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        per_device = math.ceil(self.max_batch_size / self.num_devices)
        batch = [self.num_devices * 2**k for k in range(math.ceil(math.log2(per_device)) + 1)]
        object.__setattr__(self, "seq_rungs", ladder(SEQ_MIN, self.max_seq_length))
        object.__setattr__(self, "batch_rungs", batch)

    def seq(self, length: int) -> int:
        """Padded sequence length for a longest sequence of `length` tokens."""
        return _pick(self.seq_rungs, length, "sequence length")

    def batch(self, size: int) -> int:
        """Padded batch size (a multiple of the device count) for `size` sequences."""
        return _pick(self.batch_rungs, size, "batch size")

    def rows(self, rows: int, cap: int) -> int:
        """Padded rows per device for at most `rows` wanted, never above `cap` (= B/d · S)."""
        return min(_pick(ladder(ROWS_MIN, max(cap, ROWS_MIN)), max(rows, 1), "row count"), cap)

    def forward_programs_bound(self) -> int:
        """Most distinct forward shapes a session can compile."""
        return len(self.seq_rungs) * len(self.batch_rungs)

    def gather_programs_bound(self) -> int:
        """Most distinct gather shapes a session can compile."""
        cap = self.batch_rungs[-1] // self.num_devices * self.seq_rungs[-1]
        return self.forward_programs_bound() * len(ladder(ROWS_MIN, cap))
