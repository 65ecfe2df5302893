"""Storage: allocate fields from an example transition, write rows, gather rows.

The storage is a dict of arrays with leading axis ``maxsize`` (all sub-buffers laid out one
after another). Writes are scatters of the k new rows only, so under ``jit`` with the state
donated, or carried through ``lax.scan``, an add costs O(k), not O(maxsize).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

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


def allocate(spec: dict, maxsize: int) -> dict:
    """Zero-filled storage with ``maxsize`` rows for every leaf of ``spec``."""
    return jax.tree_util.tree_map(lambda s: jnp.zeros((maxsize, *s.shape), s.dtype), spec)


def to_stored(rows: dict, *, save_only_last_obs: bool) -> dict:
    """Cut incoming ``obs``/``obs_next`` (rows of frame stacks) down to their last frame."""
    if not save_only_last_obs:
        return rows
    out = dict(rows)
    for key in ("obs", "obs_next"):
        if key in out:
            out[key] = jax.tree_util.tree_map(lambda x: x[:, -1], out[key])
    return out


def write(storage: dict, slots: jax.Array, rows: dict) -> dict:
    """Scatter ``rows`` (leading axis k) to global ``slots`` (int32[k]).

    A slot equal to ``maxsize`` (out of range) is dropped, which is how rows that are
    overwritten later in the same add, or rows with an invalid ``buffer_id``, are skipped.
    """
    return jax.tree_util.tree_map(
        lambda store, new: store.at[slots].set(new, mode="drop", unique_indices=False),
        storage,
        rows,
    )


def gather(tree: Any, index: jax.Array) -> Any:
    """``tree[index]`` for every leaf, for an index array of any shape."""
    return jax.tree_util.tree_map(lambda x: x[index], tree)
