"""Pytest fixtures shared by the tests and the doctests of the library."""

from __future__ import annotations

import gc

import jax
import pytest

MAX_MAPPINGS = 20_000
"""Clear JAX's caches after a test module once the process holds this many memory mappings
(a third of Linux's default ``vm.max_map_count``; one module adds at most about 12,000)."""


def _mappings() -> int:
    try:
        with open("/proc/self/maps") as f:
            return sum(1 for _ in f)
    except OSError:  # no /proc (macOS, Windows): those limits are not the concern here
        return 0


@pytest.fixture(autouse=True, scope="module")
def release_compiled_programs():
    """Drop JAX's compiled programs after a test module when the process holds many.

    Every XLA:CPU executable holds a few memory mappings of the process. A test worker that
    lives for the whole suite compiles tens of thousands of programs (hypothesis draws new
    shapes, eager calls compile per shape); past the kernel's ``vm.max_map_count`` (65,530 by
    default) the next compilation crashes the process.
    """
    yield
    if _mappings() > MAX_MAPPINGS:
        jax.clear_caches()
        gc.collect()
