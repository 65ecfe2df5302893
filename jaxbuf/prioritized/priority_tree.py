"""The prioritized buffers' tree: sums and minimums over one leaf array.

:class:`PriorityTree` is the ``"sum+min"`` view of :class:`jaxbuf.prioritized.tree.Tree`: it
holds ``capacity`` non-negative leaves (``p ** alpha`` per slot, 0 for an empty slot) and, for
every internal node, both the sum of its leaves (proportional sampling) and their minimum over
the non-empty ones (the importance-weight bound). One update writes the leaves once, resolves
duplicates once and recomputes both reductions of each touched node together. Exactness,
duplicates and costs as described in :mod:`jaxbuf.prioritized.tree`.
"""

from __future__ import annotations

from typing import Any

import chex
import jax.numpy as jnp
from flax import struct

from jaxbuf.prioritized.tree import Tree

__all__ = ["PriorityTree"]

_KIND = "sum+min"


class PriorityTree(struct.PyTreeNode):
    """Sum and min tree over ``capacity`` non-negative leaves (pure pytree state).

    Attributes:
      leaves: float ``[bound]``, the leaves (``bound`` = capacity rounded up to a multiple
        of 8); 0 marks an empty slot.
      bottom: float ``[ceil(bound / 64), 16]``, the sums and minimums of the nodes right
        above the leaves, 8 nodes per row (:mod:`jaxbuf.prioritized._tree_kernels`).
      upper: float ``[R, 16]``, those of every level above, packed root first.
      capacity: static int, number of leaves.

    All methods are pure, work under ``jit`` and ``vmap`` and touch ``O(B log N)`` entries
    for ``B`` leaves or queries.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxbuf.prioritized import PriorityTree
      >>> tree = PriorityTree.create(5).set(jnp.array([0, 3]), jnp.array([1.0, 2.0]))
      >>> float(tree.total()), float(tree.min())  # the min skips empty (zero) leaves
      (3.0, 1.0)
      >>> tree.find_prefix_sum(jnp.array([0.5, 2.5])).tolist()
      [0, 3]
    """

    leaves: chex.Array
    bottom: chex.Array
    upper: chex.Array
    capacity: int = struct.field(pytree_node=False)

    @property
    def _tree(self) -> Tree:
        return Tree(self.leaves, self.bottom, self.upper, self.capacity, _KIND)

    def _view(self, tree: Tree) -> PriorityTree:
        return self.replace(leaves=tree.leaves, bottom=tree.bottom, upper=tree.upper)

    @classmethod
    def create(cls, capacity: int, dtype: Any = jnp.float32) -> PriorityTree:
        """An empty tree (every leaf 0) of ``capacity`` leaves (positive int) in ``dtype``
        (floating). Raises ``ValueError`` on a bad ``capacity`` or ``dtype``."""
        tree = Tree.create(capacity, dtype, _KIND)
        return cls(tree.leaves, tree.bottom, tree.upper, tree.capacity)

    @property
    def dtype(self) -> jnp.dtype:
        """Floating dtype of the tree."""
        return self.leaves.dtype

    def total(self) -> chex.Array:
        """Sum of all leaves, a scalar."""
        return self._tree.root("sum")

    def min(self) -> chex.Array:
        """Smallest positive leaf (``+inf`` when every leaf is 0), a scalar."""
        return self._tree.root("min")

    def values(self) -> chex.Array:
        """The first ``capacity`` leaves, shape ``(capacity,)``."""
        return self._tree.values()

    def get(self, indices: chex.Array) -> chex.Array:
        """Leaf values at ``indices`` (any integer shape; clamped, not checked)."""
        return self._tree.get(indices, check=False)

    def set(self, indices: chex.Array, values: chex.Array) -> PriorityTree:
        """:meth:`set_unchecked` after eager checks: ``indices`` (integer, shape ``()`` or
        ``(B,)``) in ``[0, capacity)`` and ``values`` finite and ``>= 0`` (0 empties a slot).

        Raises:
            IndexError / ValueError: eagerly, naming the bad entries.
        """
        return self._view(self._tree.set(indices, values))

    def set_unchecked(self, indices: chex.Array, values: chex.Array) -> PriorityTree:
        """``leaf[indices[j]] = values[j]`` with every ancestor's sum and minimum recomputed.

        ``indices``: integer, shape ``()`` or ``(B,)``; the last occurrence of a duplicate
        wins; entries outside ``[0, capacity)`` are ignored (a caller masks entries out by
        mapping them to -1). ``values`` (broadcast to ``indices.shape``) must be finite and
        ``>= 0``. Cost ``O(B log N)``, no capacity-sized step; in place when donated.
        """
        return self._view(self._tree.set_unchecked(indices, values))

    def find_prefix_sum(self, values: chex.Array) -> chex.Array:
        """Index of the leaf whose prefix-sum interval contains each query value.

        For ``0 < v <= total`` the smallest ``i`` with ``v <= cumsum(leaves)[i]``; results
        are clamped to leaves of positive mass (``v <= 0``: the first, ``v > total``: the
        last), as :meth:`jaxbuf.prioritized.SumTree.find_prefix_sum`. int32, shaped like
        ``values``; 0 on an empty tree.
        """
        return self._tree.find_prefix_sum(values)[0]

    def sample(
        self, key: chex.PRNGKey, batch_size: int, stratified: bool = False
    ) -> tuple[chex.Array, chex.Array]:
        """``batch_size`` draws with probability ``leaf[i] / total`` (stratified: one in each
        of ``batch_size`` equal segments of the mass, ascending), as
        :meth:`jaxbuf.prioritized.SumTree.sample`.

        Returns ``(indices int32[batch_size], their leaf values)``; only leaves of positive
        mass are drawn; on an empty tree every draw is 0 with value 0.
        """
        return self._tree.sample(key, batch_size, stratified)
