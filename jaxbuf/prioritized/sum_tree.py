"""Standalone sum and min trees: the ``"sum"`` and ``"min"`` views of the one reduction tree.

:class:`SumTree` and :class:`MinTree` wrap a :class:`jaxbuf.prioritized.tree.Tree` (field
``core``), the implementation the prioritized buffers' :class:`PriorityTree` uses too: 8
children per node, ancestors recomputed from their children on every write (no drift), the
last duplicate winning, ``O(B log N)`` per batch of ``B`` leaves or queries, range reductions
in ``O(log N)``. See :mod:`jaxbuf.prioritized.tree`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import chex
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxbuf.prioritized.tree import Tree

__all__ = ["MinTree", "SumTree"]


class _TreeView(struct.PyTreeNode):
    """What :class:`SumTree` and :class:`MinTree` share: everything but their queries."""

    core: Tree
    _KIND: ClassVar[str]

    @classmethod
    def create(cls, capacity: int, dtype: Any = jnp.float32):
        """An empty tree of ``capacity`` leaves (a positive int) in ``dtype`` (floating;
        ``float64`` needs ``jax_enable_x64``): every leaf holds the identity (0 or ``+inf``).

        Raises:
            ValueError: ``capacity`` is not a positive int or ``dtype`` is not floating.
        """
        return cls(core=Tree.create(capacity, dtype, cls._KIND))

    @classmethod
    def from_values(cls, values: chex.Array):
        """The tree whose leaves are ``values`` (float ``[capacity]``), built in
        ``O(capacity)``; the same tree as ``create(capacity).set(arange(capacity), values)``."""
        return cls(core=Tree.from_values(values, cls._KIND))

    capacity = property(lambda self: self.core.capacity, doc="Number of leaves (static).")
    op = property(lambda self: self.core.kind, doc='The reduction, "sum" or "min" (static).')
    bound = property(
        lambda self: self.core.bound,
        doc="Number of leaf slots, ``capacity`` rounded up to a multiple of 8 (static).",
    )
    depth = property(lambda self: self.core.depth, doc="Number of levels below the root.")

    @property
    def dtype(self) -> jnp.dtype:
        """Floating dtype of the tree."""
        return self.core.dtype

    @property
    def levels(self) -> tuple[chex.Array, ...]:
        """Every node's value level by level, root first, the padded leaves last (see
        :meth:`jaxbuf.prioritized.tree.Tree.levels`); for inspection."""
        return self.core.levels()

    def root(self) -> chex.Array:
        """Reduction over all leaves, a scalar of ``dtype``."""
        return self.core.root()

    def leaves(self) -> chex.Array:
        """The first ``capacity`` leaves, shape ``(capacity,)``."""
        return self.core.values()

    def get(self, indices: chex.Array) -> chex.Array:
        """Leaf values at ``indices`` (any integer shape); the result has the same shape.

        Out-of-range indices raise ``IndexError`` eagerly; inside jit they are clamped.
        """
        return self.core.get(indices)

    def set(self, indices: chex.Array, values: chex.Array):
        """Return a tree with ``leaf[indices[j]] = values[j]`` and all ancestors recomputed.

        Args:
            indices: integer array of shape ``()`` or ``(B,)``, leaf indices in
                ``[0, capacity)``. Duplicates are allowed: the LAST occurrence wins
                (deterministically, on every backend, for any ``B``).
            values: values broadcastable to ``indices.shape``, cast to ``dtype``. They must
                be ``>= 0`` (``SumTree``: and finite; ``MinTree``: ``+inf`` clears a leaf).

        Returns:
            The updated tree. Work ``O(B log N)`` (a sort from ``2**24`` entries on, in
                float32), no ``O(capacity)`` step.

        Raises:
            IndexError: eagerly, for out-of-range indices.
            ValueError: eagerly, for a non-integer index dtype, a bad shape, or negative /
                NaN (``SumTree``: also infinite) values. Inside jit the value checks cannot
                run; out-of-range indices are then ignored.
        """
        return self.replace(core=self.core.set(indices, values))

    def set_unchecked(self, indices: chex.Array, values: chex.Array):
        """:meth:`set` without the eager checks, for callers that guarantee valid values.

        ``indices`` (integer, shape ``()`` or ``(B,)``) outside ``[0, capacity)`` are ignored,
        eagerly as well as under jit, so a caller can mask out entries by mapping them to
        ``-1`` or ``capacity``. ``values`` must broadcast to ``indices.shape``.
        """
        return self.replace(core=self.core.set_unchecked(indices, values))

    def reduce(self, start: int | chex.Array = 0, end: int | chex.Array | None = None):
        """The reduction (sum or min) of the leaves ``[start, end)``, as Tianshou's
        ``SegmentTree.reduce``: ``end=None`` means ``capacity``, a negative ``end`` counts
        from the end (``reduce(0, -1)`` leaves out the last leaf), an empty range gives the
        identity (0, or ``+inf`` for ``MinTree``).

        ``start`` in ``[0, capacity]``, ``end`` in ``[-capacity, capacity]``: Python ints or
        integer arrays of broadcastable shapes (one query per element). Out-of-range values
        raise ``IndexError`` eagerly and are clamped inside jit. Jittable, ``O(log N)`` per
        query; ``reduce()`` is the root.
        """
        return self.core.reduce(start, end)


class SumTree(_TreeView):
    """Sum tree over ``capacity`` non-negative leaves (pure pytree state).

    All methods are pure (they return new trees), work under ``jit`` and ``vmap`` (stack
    trees with ``jax.tree.map(jnp.stack, ...)`` and call the methods through ``jax.vmap``),
    and never touch more than ``O(B log N)`` entries for a batch of ``B`` leaves.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxbuf import SumTree
      >>> tree = SumTree.create(5).set(jnp.array([0, 3]), jnp.array([1.0, 2.0]))
      >>> float(tree.total()), float(tree.reduce(1, 4))
      (3.0, 2.0)
      >>> tree.find_prefix_sum(jnp.array([0.5, 1.0, 1.5])).tolist()
      [0, 0, 3]
    """

    _KIND = "sum"

    def total(self) -> chex.Array:
        """Sum of all leaves (the root), a scalar of ``dtype``."""
        return self.core.root()

    def find_prefix_sum(self, values: chex.Array) -> chex.Array:
        """Index of the leaf whose prefix-sum interval contains each query value.

        For a query ``v`` with ``0 < v <= total`` this is the smallest ``i`` with
        ``v <= cumsum(leaves)[i]`` (ties go left, like Tianshou's ``get_prefix_sum_idx``).
        Such an ``i`` always has a positive leaf. The descent never enters a subtree of zero
        mass, which *clamps* the result to leaves with positive mass: ``v <= 0`` gives the
        first positive leaf and ``v > total`` (e.g. float round-off in ``u * total``) the
        last one, so an unwritten or zero-priority leaf is never returned while the tree is
        non-empty. This differs from Tianshou only for ``v = 0`` when leaf 0 is zero (Tianshou
        returns 0 there). On an empty tree (total 0) the result is 0.

        Args:
            values: query values of any shape, cast to ``dtype``.

        Returns:
            ``int32`` indices in ``[0, capacity)`` with the shape of ``values``.
        """
        return self.core.find_prefix_sum(values)[0]

    def sample(self, key: chex.PRNGKey, batch_size: int, stratified: bool = False) -> chex.Array:
        """Draw ``batch_size`` leaf indices with probability ``leaf[i] / total``.

        Args:
            key: a JAX PRNG key.
            batch_size: number of draws, a static Python int ``>= 0``.
            stratified: if False, ``u_j ~ U[0, total)`` independently (with replacement).
                If True, one draw in each of ``batch_size`` equal segments of ``[0, total)``:
                ``u_j = (j + U[0, 1)) * total / batch_size`` (Schaul et al. 2016, App. B.2.1),
                which lowers the variance of the batch's composition. The indices then come
                out sorted by ``u``, i.e. ascending.

        Returns:
            ``int32`` indices of shape ``(batch_size,)``; only leaves with positive mass are
            returned (see :meth:`find_prefix_sum`). On an empty tree they are all 0, so the
            caller must check ``total() > 0``.
        """
        if not isinstance(batch_size, bool) and isinstance(batch_size, int | np.integer):
            batch_size = int(batch_size)
        return self.core.sample(key, batch_size, stratified)[0]


class MinTree(_TreeView):
    """Min tree over ``capacity`` leaves (8 children per node); empty leaves hold ``+inf``.

    Same layout, costs and update rules as :class:`SumTree`. A minimum that is exact after
    overwrites (a running minimum, as in Tianshou, only ever decreases); the prioritized
    buffers get theirs from the combined :class:`~jaxbuf.prioritized.PriorityTree`.

    Example:
      The minimum follows overwrites up as well as down:

      >>> import jax.numpy as jnp
      >>> from jaxbuf import MinTree
      >>> tree = MinTree.create(5).set(jnp.array([0, 3]), jnp.array([1.0, 2.0]))
      >>> float(tree.min()), float(tree.set(jnp.array([0]), jnp.array([4.0])).min())
      (1.0, 2.0)
    """

    _KIND = "min"

    def min(self) -> chex.Array:
        """Minimum over all leaves (``+inf`` when nothing was written), a scalar."""
        return self.core.root()
