"""The prioritized buffer's priority tree: sums and minimums over one leaf array.

:class:`PriorityTree` holds ``capacity`` non-negative leaves (``p ** alpha`` per slot, 0 for
an empty slot) and, for every internal node, both the sum of its leaves (proportional
sampling) and their minimum over the non-empty ones (the importance-weight bound). One
update writes the leaves once, resolves duplicates once and recomputes both reductions of
each touched node together: a separate :class:`~jaxbuf.prioritized.SumTree` and
:class:`~jaxbuf.prioritized.MinTree` did all of that twice. Layout, costs and why in
:mod:`jaxbuf.prioritized._combined` and docs/prioritized.md.

Exactness as for the separate trees: every ancestor of a written leaf is recomputed from its
children's current values, so after any sequence of updates the tree equals a rebuild from
its leaves, bit for bit (no drift as in flashbax issue 52).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxbuf._core import random as fast_random
from jaxbuf.prioritized import _combined

__all__ = ["PriorityTree"]


_set_leaves = jax.jit(_combined.set_leaves, static_argnames=("capacity",))
_find_prefix_sum = jax.jit(_combined.find_prefix, static_argnames=("capacity",))


@partial(jax.jit, static_argnames=("capacity", "batch_size", "stratified"))
def _sample(
    leaves: chex.Array,
    bottom: chex.Array,
    upper: chex.Array,
    key: chex.PRNGKey,
    *,
    capacity: int,
    batch_size: int,
    stratified: bool,
) -> tuple[chex.Array, chex.Array]:
    """Proportional (or stratified) draws; see :meth:`PriorityTree.sample`."""
    dtype = leaves.dtype
    u = fast_random.uniform(key, batch_size, dtype)
    if stratified:
        u = (jnp.arange(batch_size, dtype=dtype) + u) / batch_size
    return _combined.find_prefix(leaves, bottom, upper, u * upper[0, 0], capacity=capacity)


class PriorityTree(struct.PyTreeNode):
    """Sum and min tree over ``capacity`` non-negative leaves (pure pytree state).

    Attributes:
      leaves: float ``[bound]``, the leaves (``bound`` = capacity rounded up to a multiple
        of 8); 0 marks an empty slot.
      bottom: float ``[ceil(bound / 64), 16]``, the sums and minimums of the nodes right
        above the leaves, 8 nodes per row (:mod:`jaxbuf.prioritized._combined`).
      upper: float ``[R, 16]``, those of every level above, packed root first.
      capacity: static int, number of leaves.

    All methods are pure, work under ``jit`` and ``vmap`` and touch ``O(B log N)`` entries
    for ``B`` leaves or queries.
    """

    leaves: chex.Array
    bottom: chex.Array
    upper: chex.Array
    capacity: int = struct.field(pytree_node=False)

    @classmethod
    def create(cls, capacity: int, dtype: Any = jnp.float32) -> PriorityTree:
        """An empty tree (every leaf 0) of ``capacity`` leaves (positive int) in ``dtype``
        (floating). Raises ``ValueError`` on a bad ``capacity`` or ``dtype``."""
        if isinstance(capacity, bool) or not isinstance(capacity, int | np.integer):
            raise ValueError(
                f"PriorityTree.create: capacity must be a positive int, got "
                f"{type(capacity).__name__} {capacity!r}"
            )
        if capacity <= 0:
            raise ValueError(
                f"PriorityTree.create: capacity must be a positive int, got {capacity}"
            )
        dtype = jnp.dtype(dtype)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise ValueError(f"PriorityTree.create: dtype must be a floating dtype, got {dtype}")
        leaves, bottom, upper = _combined.fresh(int(capacity), dtype)
        return cls(leaves=leaves, bottom=bottom, upper=upper, capacity=int(capacity))

    @property
    def dtype(self) -> jnp.dtype:
        """Floating dtype of the tree."""
        return self.leaves.dtype

    def total(self) -> chex.Array:
        """Sum of all leaves, a scalar."""
        return self.upper[..., 0, 0]

    def min(self) -> chex.Array:
        """Smallest positive leaf (``+inf`` when every leaf is 0), a scalar."""
        return self.upper[..., 0, _combined.ARITY]

    def values(self) -> chex.Array:
        """The first ``capacity`` leaves, shape ``(capacity,)``."""
        return self.leaves[..., : self.capacity]

    def get(self, indices: chex.Array) -> chex.Array:
        """Leaf values at ``indices`` (any integer shape; clamped inside jit)."""
        return self.leaves[jnp.asarray(indices)]

    def set(self, indices: chex.Array, values: chex.Array) -> PriorityTree:
        """:meth:`set_unchecked` after eager checks: ``indices`` (integer, shape ``()`` or
        ``(B,)``) in ``[0, capacity)`` and ``values`` finite and ``>= 0`` (0 empties a slot).

        Raises:
            IndexError / ValueError: eagerly, naming the bad entries.
        """
        indices, values = jnp.asarray(indices), jnp.asarray(values)
        if not jnp.issubdtype(indices.dtype, jnp.integer) or indices.ndim > 1:
            raise ValueError(
                f"PriorityTree.set: indices must be integers of shape () or (B,), got "
                f"{indices.dtype}{list(indices.shape)}"
            )
        if not isinstance(indices, jax.core.Tracer) and indices.size:
            host = np.asarray(indices)
            bad = host[(host < 0) | (host >= self.capacity)]
            if bad.size:
                raise IndexError(
                    f"PriorityTree.set: indices must lie in [0, {self.capacity}), got "
                    f"{bad[:8].tolist()}"
                )
        if not isinstance(values, jax.core.Tracer) and values.size:
            host = np.asarray(values, np.float64)
            bad = ~np.isfinite(host) | (host < 0)
            if bad.any():
                raise ValueError(
                    f"PriorityTree.set: values must be finite and >= 0, got "
                    f"{host[bad][:8].tolist()}"
                )
        return self.set_unchecked(indices, values)

    def set_unchecked(self, indices: chex.Array, values: chex.Array) -> PriorityTree:
        """``leaf[indices[j]] = values[j]`` with every ancestor's sum and minimum recomputed.

        ``indices``: integer, shape ``()`` or ``(B,)``; the last occurrence of a duplicate
        wins; entries outside ``[0, capacity)`` are ignored (a caller masks entries out by
        mapping them to -1). ``values`` (broadcast to ``indices.shape``) must be finite and
        ``>= 0``. Cost ``O(B log N)``, no capacity-sized step; in place when donated.
        """
        indices = jnp.asarray(indices)
        idx = indices.reshape(-1).astype(jnp.int32)
        vals = jnp.broadcast_to(jnp.asarray(values), indices.shape).reshape(-1)
        if idx.shape[0] == 0:
            return self
        leaves, bottom, upper = _set_leaves(
            self.leaves,
            self.bottom,
            self.upper,
            idx,
            vals.astype(self.dtype),
            capacity=self.capacity,
        )
        return self.replace(leaves=leaves, bottom=bottom, upper=upper)

    def find_prefix_sum(self, values: chex.Array) -> chex.Array:
        """Index of the leaf whose prefix-sum interval contains each query value.

        For ``0 < v <= total`` the smallest ``i`` with ``v <= cumsum(leaves)[i]``; results
        are clamped to leaves of positive mass (``v <= 0``: the first, ``v > total``: the
        last), as :meth:`jaxbuf.prioritized.SumTree.find_prefix_sum`. int32, shaped like
        ``values``; 0 on an empty tree.
        """
        values = jnp.asarray(values, self.dtype)
        return _find_prefix_sum(
            self.leaves, self.bottom, self.upper, values, capacity=self.capacity
        )[0]

    def sample(
        self, key: chex.PRNGKey, batch_size: int, stratified: bool = False
    ) -> tuple[chex.Array, chex.Array]:
        """``batch_size`` draws with probability ``leaf[i] / total`` (stratified: one in each
        of ``batch_size`` equal segments of the mass, ascending), as
        :meth:`jaxbuf.prioritized.SumTree.sample`.

        Returns ``(indices int32[batch_size], their leaf values)``; only leaves of positive
        mass are drawn; on an empty tree every draw is 0 with value 0.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
            raise ValueError(f"PriorityTree.sample: batch_size must be an int, got {batch_size!r}")
        if batch_size < 0:
            raise ValueError(f"PriorityTree.sample: batch_size must be >= 0, got {batch_size}")
        return _sample(
            self.leaves,
            self.bottom,
            self.upper,
            key,
            capacity=self.capacity,
            batch_size=int(batch_size),
            stratified=bool(stratified),
        )
