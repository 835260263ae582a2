#!/usr/bin/env python3
"""Runs every `test_*` function of this folder without pytest (for machines that lack it).

    python3 worker/jax/tests/run_without_pytest.py [--shim] [name-filter]

The tests use only `tmp_path` (a fresh temporary folder here) and `pytest.raises`; when pytest
cannot be imported (or with `--shim`) a small stand-in for `pytest.raises` is installed.
Exit status 1 when any test fails.
"""

from __future__ import annotations

import importlib
import inspect
import shutil
import sys
import tempfile
import time
import traceback
import types
from pathlib import Path
from typing import Any, Iterator

TESTS = Path(__file__).resolve().parent
sys.path[:0] = [str(TESTS.parent), str(TESTS)]


class _Caught:
    value: BaseException


class _Raises:
    def __init__(self, expected: type[BaseException]) -> None:
        self.expected = expected
        self.caught = _Caught()

    def __enter__(self) -> _Caught:
        return self.caught

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: Any) -> bool:
        if kind is None:
            raise AssertionError(f"DID NOT RAISE {self.expected.__name__}")
        if not issubclass(kind, self.expected):
            return False
        assert value is not None
        self.caught.value = value
        return True


def _install_shim() -> None:
    shim = types.ModuleType("pytest")
    shim.raises = _Raises  # type: ignore[attr-defined]
    sys.modules["pytest"] = shim


def _tests(name_filter: str) -> Iterator[tuple[str, Any]]:
    for path in sorted(TESTS.glob("test_*.py")):
        module = importlib.import_module(path.stem)
        for name, fn in inspect.getmembers(module, inspect.isfunction):
            if name.startswith("test_") and fn.__module__ == module.__name__ and name_filter in f"{path.stem}::{name}":
                yield f"{path.stem}::{name}", fn


def main(argv: list[str]) -> int:
    args = [a for a in argv if a != "--shim"]
    if "--shim" in argv:
        _install_shim()
    else:
        try:
            import pytest  # noqa: F401
        except ImportError:
            _install_shim()
    failed: list[str] = []
    count = 0
    started = time.perf_counter()
    for label, fn in _tests(args[0] if args else ""):
        count += 1
        tmp = Path(tempfile.mkdtemp(prefix="shardline-jax-test-"))
        try:
            fn(tmp) if "tmp_path" in inspect.signature(fn).parameters else fn()
            print(f"ok    {label}")
        except Exception:
            failed.append(label)
            print(f"FAIL  {label}\n{traceback.format_exc()}")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"{count - len(failed)} passed, {len(failed)} failed in {time.perf_counter() - started:.1f} s")
    return 1 if failed or count == 0 else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
