"""Inspection of compiled programs (collectives and their sizes) and whole-buffer reads."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import jax
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxbuf.sharding._views import check_buffer, in_layout, is_prioritized, local_count

COLLECTIVE_OPS = (
    "all-reduce",
    "all-gather",
    "collective-permute",
    "all-to-all",
    "reduce-scatter",
    "collective-broadcast",
)
"""HLO op names counted as cross-device collectives by :func:`collectives`."""

_OPS = "|".join(COLLECTIVE_OPS)
_COLLECTIVE_RE = re.compile(r"\b(" + _OPS + r")(?:-start)?\(")
_SHAPE_RE = re.compile(r"\b[a-z]+[0-9]*\[([0-9,]*)\]")
_DEF_RE = re.compile(r"\s*(?:ROOT\s+)?(%[\w.\-]+)\s*=\s*(.+?)\s+[a-z][\w\-]*\(")
_NAME_RE = re.compile(r"%[\w.\-]+")


def _compiled_text(fn: Callable, *args: Any) -> str:
    return jax.jit(fn).lower(*args).compile().as_text()


def collectives(fn: Callable, *args: Any) -> set[str]:
    """Cross-device collectives in the compiled program of ``jax.jit(fn)(*args)``.

    Compiles ``fn`` for ``args`` and returns the names from :data:`COLLECTIVE_OPS` that occur
    as operations in the optimised HLO, e.g. ``set()`` for :func:`shard_add` and
    :func:`shard_sample` in local mode.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import jaxbuf
      >>> from jaxbuf import sharding as shd
      >>> mesh = jax.make_mesh((1,), ("env",))
      >>> ex = dict(obs=jnp.zeros(2), act=jnp.int32(0), rew=jnp.float32(0),
      ...           terminated=False, truncated=False)
      >>> rows = jax.tree.map(lambda x: jnp.stack([jnp.asarray(x)] * 2), ex)
      >>> buf = shd.create_sharded(ex, 8, 2, mesh, "env")
      >>> shd.collectives(lambda b, r: shd.shard_add(b, r, mesh, "env"), buf, rows)
      set()
    """
    return set(_COLLECTIVE_RE.findall(_compiled_text(fn, *args)))


def collective_sizes(fn: Callable, *args: Any) -> list[tuple[str, int]]:
    """``(op, elements)`` for every collective in the compiled program of ``jax.jit(fn)``.

    ``elements`` is the largest element count among the op's result and operands (per
    device; a reduce-scatter's operand is ``S`` times its result), so one op moves at most
    about ``elements`` values per device. Use it to check that a program never ships the
    storage, e.g. that no collective of ``shard_sample(..., mode="global")`` is larger than
    the sampled batch.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import jaxbuf
      >>> from jaxbuf import sharding as shd
      >>> mesh = jax.make_mesh((1,), ("env",))
      >>> ex = dict(obs=jnp.zeros(2), act=jnp.int32(0), rew=jnp.float32(0),
      ...           terminated=False, truncated=False)
      >>> rows = jax.tree.map(lambda x: jnp.stack([jnp.asarray(x)] * 2), ex)
      >>> buf = shd.create_sharded(ex, 8, 2, mesh, "env")
      >>> buf, _ = shd.shard_add(buf, rows, mesh, "env")
      >>> def draw(b, key):
      ...     return shd.shard_sample(b, key, 4, mesh, "env", mode="global")
      >>> sizes = shd.collective_sizes(draw, buf, jax.random.key(0))
      >>> max(n for _, n in sizes) <= 4 * 2  # never more than the batch's rows
      True
    """
    lines = _compiled_text(fn, *args).splitlines()
    shapes = {}
    for line in lines:
        found = _DEF_RE.match(line)
        if found:
            shapes[found.group(1)] = _elements(found.group(2))
    out = []
    for line in lines:
        found = _COLLECTIVE_RE.search(line)
        defined = _DEF_RE.match(line)
        if not found or not defined:
            continue
        call = line[found.end() :].split(")")[0]
        operands = [shapes.get(name, 0) for name in _NAME_RE.findall(call)]
        out.append((found.group(1), max([_elements(defined.group(2)), *operands])))
    return out


def _elements(type_text: str) -> int:
    """Largest element count among the array types in ``type_text`` (a tuple type lists
    several)."""
    sizes = [
        math.prod(int(d) for d in dims.split(",") if d) for dims in _SHAPE_RE.findall(type_text)
    ]
    return max(sizes, default=1)


def global_apply(fn: Callable, buf: Any, *args: Any, mesh: Mesh, axis: str) -> Any:
    """``fn(buf, *args)`` on the sharded buffer as a whole, outputs replicated.

    For the buffer methods without a shard-local helper (``buf[index]`` with global slots,
    ``prev``/``next``, ``sample_sequences``, ``unfinished_index``, ...). XLA inserts the
    cross-device collectives these need. On a mesh whose ``axis`` is ``Explicit`` (the default
    of ``jax.make_mesh``) the call runs under ``jax.sharding.auto_axes``, since explicit
    sharding refuses gathers from a sharded array; works eagerly and under ``jit``. A
    prioritized buffer is handed to ``fn`` with its one tree over all slots (rebuilt from the
    per-shard trees, ``O(maxsize)``), so its weights and reads are the unsharded ones.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import jaxbuf
      >>> from jaxbuf import sharding as shd
      >>> mesh = jax.make_mesh((1,), ("env",))
      >>> ex = dict(obs=jnp.zeros(2), act=jnp.int32(0), rew=jnp.float32(0),
      ...           terminated=False, truncated=False)
      >>> rows = jax.tree.map(lambda x: jnp.stack([jnp.asarray(x)] * 2), ex)
      >>> buf = shd.create_sharded(ex, 8, 2, mesh, "env")
      >>> buf, _ = shd.shard_add(buf, rows, mesh, "env")
      >>> nxt = shd.global_apply(lambda b, i: b.next(i), buf, jnp.array([0, 4]),
      ...                        mesh=mesh, axis="env")
      >>> nxt.tolist()
      [0, 4]
    """
    check_buffer(buf)
    local_count(buf.buffer_num, mesh, axis)
    if is_prioritized(buf):
        inner = fn
        fn = lambda b, *a: inner(in_layout(b, 0), *a)  # noqa: E731
    return across_shards(fn, (buf, *args), mesh, axis, P())


def across_shards(fn: Callable, args: tuple, mesh: Mesh, axis: str, out_spec: P) -> Any:
    """Run ``fn(*args)`` with compiler-placed collectives; outputs laid out as ``out_spec``."""
    out = NamedSharding(mesh, out_spec)
    if mesh.axis_types[mesh.axis_names.index(axis)] == AxisType.Explicit:
        return jax.sharding.auto_axes(fn, axes=axis, out_sharding=out)(*args)
    return jax.lax.with_sharding_constraint(fn(*args), out)
