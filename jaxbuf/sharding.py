"""Vector buffers sharded over a mesh axis: placement, shard-local ``add`` and ``sample``.

A sharded buffer is an ordinary :class:`jaxbuf.VectorReplayBuffer` whose leaves are global
``jax.Array``s split over the sub-buffer axis: the time-major storage ``[m, buffer_num, ...]``
with ``NamedSharding(mesh, P(None, axis))`` and the per-sub-buffer counters
``[buffer_num, ...]`` with ``P(axis)`` (:func:`partition_specs`). With ``S = mesh.shape[axis]``
shards and ``buffer_num % S == 0`` each device holds ``L = buffer_num / S`` *whole*
sub-buffers: storage columns and counter rows ``[s*L, (s+1)*L)`` of shard ``s``, i.e. the
global slots ``[s*L*m, (s+1)*L*m)``. Other mesh axes replicate the buffer.

Because episodes never cross sub-buffers (Tianshou's ``VectorReplayBuffer``), shard ``s`` can
run the single-device kernels on its own block: :func:`shard_add` and :func:`shard_sample`
use ``jax.shard_map`` to rebuild a local buffer of ``L`` sub-buffers from the local blocks and
call its ``add`` / ``sample``. Every counter in the state is local to its sub-buffer, so the
local view is the blocks as they are; every index a shard returns is made global by adding
the shard's offset ``s*L*m``. The compiled shard-local programs
contain no cross-device collective (see :func:`collectives`). ``shard_sample(...,
mode="global")`` is the explicit opt-in for draws uniform over the whole buffer; XLA then
inserts collectives (all-reduce / all-gather of the counters and of the gathered rows).

Multi-host: call ``jax.distributed.initialize`` first and use a mesh over ``jax.devices()``;
the same functions run on every process (SPMD). Each process passes its own rows through
:func:`global_batch` (``jax.make_array_from_process_local_data``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxbuf._core.checks import is_traced
from jaxbuf._core.episodes import AddResult
from jaxbuf.buffers import ReplayBuffer, VectorReplayBuffer

COLLECTIVE_OPS = (
    "all-reduce",
    "all-gather",
    "collective-permute",
    "all-to-all",
    "reduce-scatter",
    "collective-broadcast",
)
"""HLO op names counted as cross-device collectives by :func:`collectives`."""

_COLLECTIVE_RE = re.compile(r"\b(" + "|".join(COLLECTIVE_OPS) + r")(?:-start)?\(")

SAMPLE_MODES = ("local", "global")
"""The ``mode`` values of :func:`shard_sample`."""


# ---------------------------------------------------------------------- layout
def shard_count(mesh: Mesh, axis: str) -> int:
    """Number of shards along ``axis`` of ``mesh`` (a ``ValueError`` names a missing axis)."""
    if not isinstance(mesh, Mesh):
        raise TypeError(f"jaxbuf: mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    if axis not in mesh.shape:
        raise ValueError(
            f"jaxbuf: mesh axis '{axis}' not found; the mesh has axes {tuple(mesh.axis_names)}"
        )
    return int(mesh.shape[axis])


def local_count(buffer_num: int, mesh: Mesh, axis: str) -> int:
    """Sub-buffers per shard, ``buffer_num / S``; a ``ValueError`` if it does not divide."""
    shards = shard_count(mesh, axis)
    if buffer_num % shards:
        raise ValueError(
            f"jaxbuf: buffer_num={buffer_num} must be divisible by the size {shards} of mesh "
            f"axis '{axis}' so that every device holds whole sub-buffers"
        )
    return buffer_num // shards


def partition_specs(buf: Any, axis: str) -> Any:
    """The ``PartitionSpec`` of every leaf of ``buf``, split over the sub-buffer axis.

    Storage leaves ``[m, buffer_num, ...]`` get ``P(None, axis)``; ``counters`` and
    ``ep_return`` (leading axis ``buffer_num``) get ``P(axis)``. Same pytree structure as
    ``buf`` (a buffer or its abstract value).
    """
    _check_buffer(buf)
    return buf.replace(
        storage=jax.tree_util.tree_map(lambda _: P(None, axis), buf.storage),
        counters=P(axis),
        ep_return=P(axis),
    )


def buffer_sharding(buf: Any, mesh: Mesh, axis: str) -> Any:
    """The ``NamedSharding`` of every leaf of ``buf`` (see :func:`partition_specs`).

    ``buf`` is a buffer or its abstract value (``jax.eval_shape``); the result has the same
    pytree structure, usable as ``out_shardings``, for ``jax.device_put`` or as the target
    shardings of a checkpoint restore. Checks that ``buffer_num`` divides over the axis.
    """
    local_count(buf.buffer_num, mesh, axis)
    return _named(mesh, partition_specs(buf, axis))


def _is_spec(x: Any) -> bool:
    return isinstance(x, P)


def _named(mesh: Mesh, specs: Any) -> Any:
    """A tree of ``PartitionSpec`` as the same tree of ``NamedSharding`` on ``mesh``."""
    return jax.tree_util.tree_map(lambda spec: NamedSharding(mesh, spec), specs, is_leaf=_is_spec)


def sharded_like(buf: Any, mesh: Mesh, axis: str) -> Any:
    """The abstract value of ``buf`` laid out over ``mesh``: ``ShapeDtypeStruct`` leaves.

    ``buf`` is a buffer (any layout) or ``jax.eval_shape`` of one. The result is the ``like``
    for restoring a checkpoint onto this mesh, whatever device count it was saved from::

        buf = jaxbuf.restore(path, like=sharded_like(saved_like, mesh4, "env"))

    Each leaf carries ``NamedSharding(mesh, P(axis))``; orbax reads only the blocks each
    device needs.
    """
    shardings = buffer_sharding(buf, mesh, axis)
    return jax.tree_util.tree_map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), buf, shardings
    )


def create_sharded(
    example: dict, total_size: int, buffer_num: int, mesh: Mesh, axis: str, **options: Any
) -> VectorReplayBuffer:
    """An empty :class:`VectorReplayBuffer` allocated directly in its sharded layout.

    Same arguments as ``VectorReplayBuffer.create`` (``options``: ``stack_num``,
    ``ignore_obs_next``, ``save_only_last_obs``, ``sample_avail``, ``lockstep``) plus the mesh
    and the axis whose shards each hold ``buffer_num / S`` sub-buffers. No device ever holds
    the whole buffer. Multi-host: call it on every process with the same arguments.
    """
    local_count(buffer_num, mesh, axis)

    def make() -> VectorReplayBuffer:
        return VectorReplayBuffer.create(example, total_size, buffer_num, **options)

    shardings = buffer_sharding(jax.eval_shape(make), mesh, axis)
    return jax.jit(make, out_shardings=shardings)()


def shard_buffer(buf: ReplayBuffer, mesh: Mesh, axis: str) -> ReplayBuffer:
    """Place an existing buffer in the sharded layout (``jax.device_put``).

    Multi-host: every process must pass the same (host-resident) buffer; each keeps the
    blocks of its own devices.
    """
    return jax.device_put(buf, buffer_sharding(buf, mesh, axis))


def process_subbuffers(buffer_num: int, mesh: Mesh, axis: str) -> np.ndarray:
    """int[]: ids of the sub-buffers held by this process's devices, ascending.

    Multi-host, these are the envs this process steps; its rows for :func:`global_batch` come
    in this order. Single-process, every id ``0 .. buffer_num - 1``.
    """
    local_count(buffer_num, mesh, axis)
    index_map = NamedSharding(mesh, P(axis)).addressable_devices_indices_map((buffer_num,))
    held = {i for (block,) in index_map.values() for i in range(buffer_num)[block]}
    return np.array(sorted(held), dtype=np.int32)


def global_batch(batch: Any, mesh: Mesh, axis: str) -> Any:
    """This process's rows of a batch as global arrays sharded over ``axis``.

    Every leaf's leading axis holds this process's rows: for a full-width add, the rows of
    :func:`process_subbuffers` in that order (``jax.make_array_from_process_local_data``);
    the global leading size is the sum over processes. Single-process, this is
    ``jax.device_put`` to ``P(axis)``.
    """
    sharding = NamedSharding(mesh, P(axis))
    return jax.tree_util.tree_map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch
    )


def process_rank() -> tuple[int, int]:
    """``(jax.process_index(), jax.process_count())``: this process's rank and the world size.

    For the RLinf file mode's rank-partitioned loading,
    ``load_checkpoint(path, is_distributed=True, local_rank=rank, world_size=world)``
    with ``rank, world = jaxbuf.sharding.process_rank()`` after
    ``jax.distributed.initialize``; single-process JAX gives ``(0, 1)``.
    """
    return jax.process_index(), jax.process_count()


# ---------------------------------------------------------------------- local views
def _check_buffer(buf: Any) -> None:
    if not isinstance(buf, ReplayBuffer):
        raise TypeError(
            f"jaxbuf: expected a ReplayBuffer/VectorReplayBuffer, got {type(buf).__name__}"
        )


def _offset(buf: ReplayBuffer, axis: str, n_local: int) -> jax.Array:
    """Global slot of this shard's first row, ``axis_index * L * m`` (inside shard_map)."""
    return jax.lax.axis_index(axis).astype(jnp.int32) * (n_local * buf.subbuffer_size)


def _laid_out(tree: Any, mesh: Mesh, specs: Any) -> Any:
    """Constrain ``tree`` (inside ``jit``) to ``NamedSharding(mesh, spec)`` leaf by leaf.

    ``specs`` is one ``PartitionSpec`` or a tree of them shaped like ``tree``. A no-op for
    inputs already laid out that way; anything else is moved by XLA first. Explicit-sharding
    meshes need ``reshard``, automatic ones a sharding constraint.
    """
    if _is_spec(specs):
        specs = jax.tree_util.tree_map(lambda _: specs, tree)
    shardings = _named(mesh, specs)
    if AxisType.Explicit in mesh.axis_types:
        return jax.sharding.reshard(tree, shardings)
    return jax.lax.with_sharding_constraint(tree, shardings)


def _globalize(index: jax.Array, offset: jax.Array) -> jax.Array:
    """Local slots to global ones; -1 (no slot) stays -1."""
    return jnp.where(index >= 0, index + offset, index).astype(jnp.int32)


# ---------------------------------------------------------------------- add
def shard_add(
    buf: ReplayBuffer,
    batch: dict,
    mesh: Mesh,
    axis: str,
    buffer_ids: chex.Array | None = None,
) -> tuple[ReplayBuffer, AddResult]:
    """Shard-local ``add``: shard ``s`` writes its block of rows into its own sub-buffers.

    Args:
      buf: a buffer in the layout of :func:`buffer_sharding`.
      batch: dict of rows with leading axis k, sharded (or to be placed) over ``axis``;
        numpy leaves are placed with :func:`global_batch`. With ``buffer_ids=None``,
        ``k = buffer_num`` and row j goes to sub-buffer j. Otherwise ``k`` is a multiple of
        ``S`` and shard ``s`` receives rows ``[s*k/S, (s+1)*k/S)``, whose ids must lie in its
        sub-buffers ``[s*L, (s+1)*L)``; a row aimed at another shard's sub-buffer raises when
        the ids are concrete and is dropped (result row ``(-1, 0, 0, -1)``) under ``jit``,
        as the core does with an invalid id.
      mesh: the mesh the buffer is placed on.
      axis: the mesh axis the buffer is sharded over.
      buffer_ids: int[k] global sub-buffer ids, or None.
    Returns:
      ``(buffer, AddResult)`` exactly as ``buf.add(batch, buffer_ids)`` on the unsharded
      buffer would return them (global slots), with every output sharded over ``axis``.
      The compiled program has no cross-device collective.
    """
    _check_buffer(buf)
    n_local = local_count(buf.buffer_num, mesh, axis)
    shards = shard_count(mesh, axis)
    if not isinstance(batch, dict):
        raise TypeError(f"jaxbuf: shard_add expects a dict batch, got {type(batch).__name__}")
    k = _rows_of(batch)
    if buffer_ids is None:
        if k != buf.buffer_num:
            raise ValueError(
                f"jaxbuf: with buffer_ids=None the batch needs buffer_num={buf.buffer_num} "
                f"rows, got {k}"
            )
    else:
        if k % shards:
            raise ValueError(
                f"jaxbuf: the batch has {k} rows, which must be a multiple of the {shards} "
                f"shards of mesh axis '{axis}'"
            )
        _check_routing(buffer_ids, k, shards, n_local, buf.buffer_num)
        buffer_ids = _placed(buffer_ids, mesh, axis)
    batch = jax.tree_util.tree_map(lambda x: _placed(x, mesh, axis), batch)
    return _add(buf, batch, buffer_ids, mesh=mesh, axis=axis)


def _rows_of(batch: dict) -> int:
    leaves = jax.tree_util.tree_leaves(batch)
    sizes = {int(np.shape(x)[0]) if np.ndim(x) else 0 for x in leaves}
    if len(sizes) != 1 or 0 in sizes:
        raise ValueError(
            f"jaxbuf: every batch leaf needs the same leading row axis, got sizes {sorted(sizes)}"
        )
    return sizes.pop()


def _check_routing(ids: Any, k: int, shards: int, n_local: int, buffer_num: int) -> None:
    """Raise if a concrete id is a valid sub-buffer of a shard other than its row's shard."""
    if np.shape(ids) != (k,):
        raise ValueError(f"jaxbuf: buffer_ids expected shape ({k},), got {np.shape(ids)}")
    if is_traced(ids) or not getattr(ids, "is_fully_addressable", True):
        return
    ids = np.asarray(ids)
    row_shard = np.repeat(np.arange(shards), k // shards)
    valid = (ids >= 0) & (ids < buffer_num)
    wrong = valid & (ids // n_local != row_shard)
    if wrong.any():
        j = int(np.argmax(wrong))
        raise ValueError(
            f"jaxbuf: buffer_ids[{j}]={int(ids[j])} belongs to shard {int(ids[j]) // n_local}, "
            f"but row {j} is on shard {row_shard[j]}; shard s must receive rows for its own "
            f"sub-buffers [s*{n_local}, (s+1)*{n_local}) (shard_add does not move rows "
            "between devices)"
        )


def _placed(x: Any, mesh: Mesh, axis: str) -> Any:
    """Leave jax arrays and tracers as they are; place host data with ``global_batch``."""
    if isinstance(x, jax.Array | jax.core.Tracer):
        return x
    return global_batch(x, mesh, axis)


@functools.partial(jax.jit, static_argnames=("mesh", "axis"))
def _add(buf, batch, buffer_ids, *, mesh, axis):
    n_local = local_count(buf.buffer_num, mesh, axis)

    def local_add(b, rows, ids):
        offset = _offset(b, axis, n_local)
        if ids is not None:
            ids = ids - jax.lax.axis_index(axis).astype(ids.dtype) * n_local
        new, res = b.replace(buffer_num=n_local).add(rows, ids)
        res = res._replace(
            index=_globalize(res.index, offset), episode_start=_globalize(res.episode_start, offset)
        )
        return new.replace(buffer_num=b.buffer_num), res

    # check_vma=False: the core's scans start from shard-invariant carries (``arange``) that
    # become shard-varying, which shard_map's varying-axes type check rejects; every output
    # is per-shard by construction and nothing reduces across shards.
    spec, buf_spec = P(axis), partition_specs(buf, axis)
    buf = _laid_out(buf, mesh, buf_spec)
    batch, buffer_ids = _laid_out((batch, buffer_ids), mesh, spec)
    out_specs = (buf_spec, spec)
    if buffer_ids is None:
        fn = jax.shard_map(
            lambda b, rows: local_add(b, rows, None),
            mesh=mesh,
            in_specs=(buf_spec, spec),
            out_specs=out_specs,
            check_vma=False,
        )
        return fn(buf, batch)
    fn = jax.shard_map(
        local_add,
        mesh=mesh,
        in_specs=(buf_spec, spec, spec),
        out_specs=out_specs,
        check_vma=False,
    )
    return fn(buf, batch, buffer_ids)


# ---------------------------------------------------------------------- sample
def shard_sample(
    buf: ReplayBuffer,
    key: chex.PRNGKey,
    batch_size_per_shard: int,
    mesh: Mesh,
    axis: str,
    *,
    mode: str = "local",
) -> tuple[dict, jax.Array]:
    """Sample ``S * batch_size_per_shard`` transitions; outputs sharded over ``axis``.

    ``mode="local"`` (default, no collectives): shard ``s`` draws ``batch_size_per_shard``
    indices from its own sub-buffers with ``buf_s.sample(jax.random.fold_in(key, s), B)``,
    where ``buf_s`` is the shard's local buffer of ``L`` sub-buffers; rows
    ``[s*B, (s+1)*B)`` of the result are shard ``s``'s draws. Within a shard the draws are
    uniform over its stored transitions; across shards each contributes exactly B rows, not
    a share proportional to its size. An empty shard returns its first slot B times.

    ``mode="global"`` (opt-in, inserts cross-device collectives): the draws are
    ``buf.sample(key, S*B)`` of the unsharded buffer, uniform over all stored transitions;
    XLA gathers the counters and the sampled rows across devices.

    Returns:
      ``(batch, indices)``: ``batch`` as ``buf[indices]`` (leading axis ``S*B``), ``indices``
      int32[S*B] global slots.
    """
    _check_buffer(buf)
    local_count(buf.buffer_num, mesh, axis)
    if not isinstance(batch_size_per_shard, int | np.integer) or batch_size_per_shard < 1:
        raise ValueError(
            f"jaxbuf: batch_size_per_shard must be an int >= 1, got {batch_size_per_shard!r}"
        )
    if mode not in SAMPLE_MODES:
        raise ValueError(f"jaxbuf: mode must be one of {SAMPLE_MODES}, got {mode!r}")
    b = int(batch_size_per_shard)
    if mode == "global":
        return _sample_global(
            buf, key, batch_size=b * shard_count(mesh, axis), mesh=mesh, axis=axis
        )
    return _sample_local(buf, key, batch_size=b, mesh=mesh, axis=axis)


@functools.partial(jax.jit, static_argnames=("batch_size", "mesh", "axis"))
def _sample_local(buf, key, *, batch_size, mesh, axis):
    n_local = local_count(buf.buffer_num, mesh, axis)

    def local_sample(b, k):
        offset = _offset(b, axis, n_local)
        shard_key = jax.random.fold_in(k, jax.lax.axis_index(axis))
        rows, idx = b.replace(buffer_num=n_local).sample(shard_key, batch_size)
        return rows, _globalize(idx, offset)

    # check_vma=False: see _add.
    buf_spec = partition_specs(buf, axis)
    fn = jax.shard_map(
        local_sample, mesh=mesh, in_specs=(buf_spec, P()), out_specs=P(axis), check_vma=False
    )
    return fn(_laid_out(buf, mesh, buf_spec), _laid_out(key, mesh, P()))


@functools.partial(jax.jit, static_argnames=("batch_size", "mesh", "axis"))
def _sample_global(buf, key, *, batch_size, mesh, axis):
    return _across_shards(lambda b, k: b.sample(k, batch_size), (buf, key), mesh, axis, P(axis))


def global_apply(fn: Callable, buf: ReplayBuffer, *args: Any, mesh: Mesh, axis: str) -> Any:
    """``fn(buf, *args)`` on the sharded buffer as a whole, outputs replicated.

    For the buffer methods without a shard-local helper (``buf[index]`` with global slots,
    ``prev``/``next``, ``sample_sequences``, ``unfinished_index``, ...). XLA inserts the
    cross-device collectives these need. On a mesh whose ``axis`` is ``Explicit`` (the default
    of ``jax.make_mesh``) the call runs under ``jax.sharding.auto_axes``, since explicit
    sharding refuses gathers from a sharded array; works eagerly and under ``jit``.

    Example: ``rows = global_apply(lambda b, i: b[i], buf, idx, mesh=mesh, axis="env")``.
    """
    _check_buffer(buf)
    local_count(buf.buffer_num, mesh, axis)
    return _across_shards(fn, (buf, *args), mesh, axis, P())


def _across_shards(fn: Callable, args: tuple, mesh: Mesh, axis: str, out_spec: P) -> Any:
    """Run ``fn(*args)`` with compiler-placed collectives; outputs laid out as ``out_spec``."""
    out = NamedSharding(mesh, out_spec)
    if mesh.axis_types[mesh.axis_names.index(axis)] == AxisType.Explicit:
        return jax.sharding.auto_axes(fn, axes=axis, out_sharding=out)(*args)
    return jax.lax.with_sharding_constraint(fn(*args), out)


# ---------------------------------------------------------------------- inspection
def collectives(fn: Callable, *args: Any) -> set[str]:
    """Cross-device collectives in the compiled program of ``jax.jit(fn)(*args)``.

    Compiles ``fn`` for ``args`` and returns the names from :data:`COLLECTIVE_OPS` that occur
    as operations in the optimised HLO, e.g. ``set()`` for :func:`shard_add` and
    :func:`shard_sample` in local mode.
    """
    text = jax.jit(fn).lower(*args).compile().as_text()
    return set(_COLLECTIVE_RE.findall(text))
