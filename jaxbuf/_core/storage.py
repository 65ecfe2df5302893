"""Storage: allocate fields from an example transition, write rows, gather rows.

Global slots follow Tianshou's layout (sub-buffer ``k`` owns ``[k*m, (k+1)*m)``), but the
arrays are stored *time-major*: every leaf has shape ``[m, n, *field_shape]`` and global slot
``g`` lives at ``[g % m, g // m]`` (local slot, sub-buffer). One add of one row per
sub-buffer at the same local slot is then one contiguous block of ``n`` rows instead of ``n``
rows ``m`` apart, which keeps its cost flat as the capacity outgrows the caches
(docs/design.md). Sharding over sub-buffers splits axis 1, so each
device still holds whole sub-buffers.

Writes are scatters of the k new rows only, so under ``jit`` with the state donated, or
carried through ``lax.scan``, an add costs O(k), not O(maxsize).

Every function takes the storage's ``memory_kind`` (``None``: device memory). With a host
kind (:mod:`jaxbuf._core.memory`) the operation runs on the host side: a write moves only
the new rows (and their slots) to the host, a gather moves only the gathered rows to the
device, and the storage never leaves host memory.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxbuf._core import memory
from jaxbuf._core.validate import storage_dtype


def input_spec(example: dict, *, ignore_obs_next: bool) -> dict:
    """Shape/dtype of one incoming transition per key (no batch axis)."""
    spec = {}
    for key, value in example.items():
        if key == "obs_next" and ignore_obs_next:
            continue
        spec[key] = jax.tree_util.tree_map(
            lambda v, k=key: jax.ShapeDtypeStruct(jnp.shape(v), storage_dtype(k, v)), value
        )
    return spec


def stored_spec(spec: dict, *, save_only_last_obs: bool) -> dict:
    """Shape/dtype of a stored row: ``obs``/``obs_next`` keep only their last frame if asked."""
    out = dict(spec)
    if save_only_last_obs:
        for key in ("obs", "obs_next"):
            if key in out:
                out[key] = jax.tree_util.tree_map(
                    lambda s: jax.ShapeDtypeStruct(s.shape[1:], s.dtype), out[key]
                )
    return out


def allocate(spec: dict, m: int, n: int, memory_kind: str | None = None) -> dict:
    """Zero-filled time-major storage ``[m, n, *shape]`` for every leaf of ``spec``."""
    zeros = jax.tree_util.tree_map(lambda s: jnp.zeros((m, n, *s.shape), s.dtype), spec)
    return zeros if memory_kind is None else memory.to_host(zeros)


def coordinates(slots: jax.Array, m: int) -> tuple[jax.Array, jax.Array]:
    """``(local slot, sub-buffer)`` of global ``slots``: the storage coordinates."""
    return slots % m, slots // m


def to_stored(rows: dict, *, save_only_last_obs: bool) -> dict:
    """Cut incoming ``obs``/``obs_next`` (rows of frame stacks) down to their last frame."""
    if not save_only_last_obs:
        return rows
    out = dict(rows)
    for key in ("obs", "obs_next"):
        if key in out:
            out[key] = jax.tree_util.tree_map(lambda x: x[:, -1], out[key])
    return out


def write(
    storage: dict,
    slots: jax.Array,
    rows: dict,
    *,
    unique: bool = False,
    memory_kind: str | None = None,
) -> dict:
    """Scatter ``rows`` (leading axis k) to global ``slots`` (int32[k]).

    A slot ``>= maxsize`` (sub-buffer out of range) is dropped, which is how rows that are
    overwritten later in the same add, or rows with an invalid ``buffer_id``, are skipped.
    ``unique`` promises that the slots are distinct (lets XLA skip ordering the updates).
    """
    m = jax.tree_util.tree_leaves(storage)[0].shape[0]
    local, sub = coordinates(slots, m)

    def scatter(storage, local, sub, rows):
        return jax.tree_util.tree_map(
            lambda store, new: store.at[local, sub].set(new, mode="drop", unique_indices=unique),
            storage,
            rows,
        )

    if memory_kind is None:
        return scatter(storage, local, sub, rows)
    return memory.on_host(scatter, storage, local, sub, rows)


def write_block(
    storage: dict, local: jax.Array, rows: dict, memory_kind: str | None = None
) -> dict:
    """Write ``rows`` (leading axis n, row k to sub-buffer k) at the same ``local`` slot.

    One contiguous ``[1, n, ...]`` block of the time-major storage, written with
    ``dynamic_update_slice``: XLA fuses the producer of the rows (e.g. the slice of a scan's
    input) into it, which a scatter cannot absorb.
    """

    def update(storage, local, rows):
        return jax.tree_util.tree_map(
            lambda store, new: jax.lax.dynamic_update_index_in_dim(store, new, local, 0),
            storage,
            rows,
        )

    if memory_kind is None:
        return update(storage, local, rows)
    return memory.on_host(update, storage, local, rows)


def gather(tree: Any, index: jax.Array, memory_kind: str | None = None) -> Any:
    """Every leaf at global slots ``index`` (an int array of any shape, in range).

    The result is in device memory (with a host ``memory_kind``, gathered on the host and
    then moved: ``index.size`` rows per leaf cross, never the storage).
    """
    leaves = jax.tree_util.tree_leaves(tree)
    if not leaves:
        return tree
    local, sub = coordinates(index, leaves[0].shape[0])

    def take(tree, local, sub):
        return jax.tree_util.tree_map(lambda x: x[local, sub], tree)

    if memory_kind is None:
        return take(tree, local, sub)
    return memory.to_device(memory.on_host(take, tree, local, sub))


def to_global_order(storage: dict, memory_kind: str | None = None) -> dict:
    """The storage as ``[maxsize, *shape]`` arrays indexed by global slot (a copy, in the
    storage's memory: a host storage is reordered on the host and stays there)."""

    def reorder(storage):
        return jax.tree_util.tree_map(
            lambda x: jnp.swapaxes(x, 0, 1).reshape((-1, *x.shape[2:])), storage
        )

    return reorder(storage) if memory_kind is None else memory.on_host(reorder, storage)


def from_global_order(arrays: dict, m: int, n: int, memory_kind: str | None = None) -> dict:
    """Inverse of :func:`to_global_order`: ``[n*m, *shape]`` arrays to ``[m, n, *shape]``
    (placed in ``memory_kind``)."""

    def reorder(arrays):
        return jax.tree_util.tree_map(
            lambda x: jnp.swapaxes(jnp.reshape(x, (n, m, *jnp.shape(x)[1:])), 0, 1), arrays
        )

    if memory_kind is None:
        return reorder(arrays)
    return memory.on_host(reorder, jax.tree_util.tree_map(jnp.asarray, arrays))
