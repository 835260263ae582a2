"""Shape buckets: every request fits its bucket, and the shapes a session can meet stay within the bound."""

from __future__ import annotations

import math

import pytest

from shardline_jax.buckets import Buckets, ladder


def test_ladder_is_powers_of_two_and_their_midpoints() -> None:
    assert ladder(32, 2048) == [32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048]
    assert ladder(32, 2000)[-1] == 2048 and ladder(32, 1025)[-1] == 1536
    assert ladder(32, 1) == [32]
    assert ladder(8, 13) == [8, 12, 16]
    with pytest.raises(ValueError):
        ladder(3, 100)


def test_documented_counts() -> None:
    for max_seq, count in ((32, 1), (33, 2), (2048, 13), (32768, 21)):
        assert len(Buckets(max_batch_size=1, max_seq_length=max_seq, num_devices=1).seq_rungs) == count
    for max_seq in range(33, 5000, 7):
        assert len(Buckets(1, max_seq, 1).seq_rungs) <= 1 + 2 * math.ceil(math.log2(max_seq / 32)), max_seq
    for max_batch, devices, rungs in ((1, 1, [1]), (32, 1, [1, 2, 4, 8, 16, 32]), (32, 8, [8, 16, 32]), (5, 4, [4, 8]), (3, 8, [8])):
        assert Buckets(max_batch, 512, devices).batch_rungs == rungs
    assert Buckets(32, 2048, 1).forward_programs_bound() == 13 * 6


def test_every_request_fits_and_the_shape_count_is_bounded() -> None:
    for max_batch, max_seq, devices in ((8, 300, 1), (6, 200, 4), (16, 96, 8), (3, 64, 2)):
        _check_limits(max_batch, max_seq, devices)


def _check_limits(max_batch: int, max_seq: int, devices: int) -> None:
    b = Buckets(max_batch, max_seq, devices)
    forward: set[tuple[int, int]] = set()
    gather: set[tuple[int, int, int]] = set()
    for size in range(1, max_batch + 1):
        for longest in range(1, max_seq + 1):
            B, S = b.batch(size), b.seq(longest)
            assert B >= size and B % devices == 0 and S >= longest
            assert S <= max(32, math.ceil(1.5 * longest)) + 1  # at most 1.5x padding above the floor
            assert B < 2 * max(size, devices) or B == devices
            forward.add((B, S))
            cap = B // devices * S
            for rows in {1, 2, 7, 8, 9, 100, cap // 3, cap - 1, cap} - {0}:
                if rows > cap:
                    continue
                R = b.rows(rows, cap)
                assert rows <= R <= cap
                gather.add((B, S, R))
    assert len(forward) <= b.forward_programs_bound()
    assert len(forward) == len(b.seq_rungs) * len(b.batch_rungs)  # the bound is reached, not loose
    assert len(gather) <= b.gather_programs_bound()


def test_out_of_range_values_are_refused() -> None:
    b = Buckets(4, 100, 1)
    with pytest.raises(ValueError):
        b.seq(129)
    with pytest.raises(ValueError):
        b.batch(5)
    with pytest.raises(ValueError):
        Buckets(0, 100, 1)
