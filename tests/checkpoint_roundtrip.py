"""Reusable checkpoint round-trip check for any jaxbuf buffer (core, prioritized, HER, cached).

Usage from a buffer's test module::

    from checkpoint_roundtrip import assert_roundtrip

    def test_checkpoint(tmp_path):
        buf = ...  # a filled buffer
        assert_roundtrip(buf, lambda b: continue_fn(b), tmp_path)

A new buffer class must be registered first (jaxbuf.checkpoint.registry.BUILTIN_CLASSES or
``jaxbuf.checkpoint.register_buffer``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

import jaxbuf.checkpoint as ckpt


def _bits(x: Any) -> tuple[str, tuple, bytes]:
    """dtype, shape and raw bytes of a leaf (typed PRNG keys through their key data)."""
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        return str(x.dtype), x.shape, np.asarray(jax.random.key_data(x)).tobytes()
    arr = np.asarray(x)
    return str(arr.dtype), arr.shape, arr.tobytes()


def assert_bit_identical(actual: Any, expected: Any, what: str = "") -> None:
    """Same pytree structure (classes and static fields included), dtypes, shapes and bytes."""
    assert jax.tree_util.tree_structure(actual) == jax.tree_util.tree_structure(expected), (
        f"{what}: structure {jax.tree_util.tree_structure(actual)} != "
        f"{jax.tree_util.tree_structure(expected)}"
    )
    flat_a = jax.tree_util.tree_flatten_with_path(actual)[0]
    flat_e = jax.tree_util.tree_leaves(expected)
    for (path, a), e in zip(flat_a, flat_e):
        name = jax.tree_util.keystr(path)
        assert type(a) is type(e) or (isinstance(a, jax.Array) and isinstance(e, jax.Array)), (
            f"{what}{name}: leaf type {type(a)} != {type(e)}"
        )
        da, sa, ba = _bits(a)
        de, se, be = _bits(e)
        assert (da, sa) == (de, se), f"{what}{name}: {sa} {da} != {se} {de}"
        assert ba == be, f"{what}{name}: values differ"


def abstract_of(buf: Any) -> Any:
    """``buf`` with every array replaced by its ``ShapeDtypeStruct`` (sharding kept)."""
    return jax.tree_util.tree_map(
        lambda x: (
            jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
            if isinstance(x, jax.Array)
            else x
        ),
        buf,
    )


def assert_roundtrip(buf: Any, continue_fn: Callable[[Any], Any], directory: str | Path) -> Any:
    """Save ``buf``, restore it without and with ``like``, and check it behaves the same.

    Checks: both restores are bit-identical to ``buf`` (same class, static config, leaves),
    and ``continue_fn`` (e.g. more adds and samples with fixed keys, returning any pytree)
    gives bit-identical outputs on the restored and on the never-saved buffer.
    Returns the buffer restored without ``like``.
    """
    directory = Path(directory) / "roundtrip"
    ckpt.save(directory, buf)
    plain = ckpt.restore(directory)
    assert_bit_identical(plain, buf, "restore without like: ")
    onto = ckpt.restore(directory, like=abstract_of(buf))
    assert_bit_identical(onto, buf, "restore with like: ")
    expected = continue_fn(buf)
    assert_bit_identical(continue_fn(plain), expected, "continued after restore: ")
    assert_bit_identical(continue_fn(onto), expected, "continued after restore with like: ")
    return plain
