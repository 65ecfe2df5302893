"""Pure, jittable segment trees (sum and min) for prioritized experience replay.

Layout
------
A tree over ``capacity`` leaves is one flat array ``nodes`` of length ``2 * bound``, where
``bound`` is the smallest power of two ``>= capacity``. Node ``1`` is the root, node ``k`` has
children ``2k`` and ``2k + 1`` and leaf ``i`` lives at ``nodes[bound + i]``; ``nodes[0]`` is
unused. Leaves ``capacity .. bound - 1`` are padding and always hold the identity of the
reduction (``0`` for :class:`SumTree`, ``+inf`` for :class:`MinTree`), as do leaves that were
never written. This is the layout of Tianshou's ``SegmentTree`` (tianshou-semantics.md, 8.1).

Cost
----
``set`` of ``B`` leaves does ``O(B log B)`` work to resolve duplicate indices and ``O(B)`` work
per level for ``log2(bound)`` levels: ``O(B log N)`` in all, with no step whose cost depends on
the capacity (no dense scatter, no rebuild, no capacity-sized ``bincount`` as in flashbax).
Under ``jit`` with the tree donated (or carried through a ``lax.scan``/``fori_loop``), XLA
performs the scatters in place. Queries (``find_prefix_sum``, ``sample``) walk root to leaf
in ``log2(bound)`` vectorised steps: ``O(B log N)`` work. The kernels are jitted, so eager
calls compile once per shape instead of op by op; validation runs outside them.

Exactness
---------
Every ancestor of a written leaf is *recomputed from its two children* instead of being
incremented by a delta, so rounding error does not accumulate over many updates: after any
sequence of updates each internal node equals the (float) reduction of its current children,
exactly as if the tree were rebuilt. This avoids the drift of flashbax's delta-propagating tree
(flashbax issue 52) in which the float32 root and the leaf sum disagree after many updates and
zero-priority items end up being sampled.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, ClassVar

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

__all__ = ["MinTree", "SumTree"]


def _is_concrete(x: Any) -> bool:
    """True when ``x`` holds concrete values (eager call), False inside jit/vmap/grad."""
    return not isinstance(x, jax.core.Tracer)


def _next_pow2(n: int) -> int:
    """Smallest power of two ``>= n`` for ``n >= 1``."""
    return 1 << (n - 1).bit_length()


_COMBINE: dict[str, Callable[[chex.Array, chex.Array], chex.Array]] = {
    "sum": jnp.add,
    "min": jnp.minimum,
}


@partial(jax.jit, static_argnames=("capacity", "op"))
def _set_leaves(
    nodes: chex.Array, idx: chex.Array, vals: chex.Array, *, capacity: int, op: str
) -> chex.Array:
    """Write ``vals`` (B,) to leaves ``idx`` (B,) and recompute their ancestors.

    Duplicates: the last occurrence wins. Indices outside ``[0, capacity)`` are dropped.
    Work ``O(B log B)`` (sort) + ``O(B)`` per level; nothing proportional to ``capacity``.
    """
    bound = _next_pow2(capacity)
    combine = _COMBINE[op]

    # Resolve duplicates: a stable sort groups equal indices in call order; only the last
    # element of each group writes its leaf, the others are sent out of range and dropped.
    # Out-of-range indices are dropped the same way.
    order = jnp.argsort(idx, stable=True)
    idx, vals = idx[order], vals[order]
    is_last = jnp.concatenate([idx[1:] != idx[:-1], jnp.ones((1,), bool)])
    in_range = (idx >= 0) & (idx < capacity)
    target = jnp.where(is_last & in_range, bound + idx, 2 * bound)
    nodes = nodes.at[target].set(vals, mode="drop")

    # Recompute ancestors level by level from their two children. Parents listed twice in
    # one level read the same children, so they write identical values and the scatter
    # order does not matter. Recomputing an untouched node is a no-op, so out-of-range
    # entries simply walk up from a clamped (unchanged) leaf.
    pos = bound + jnp.clip(idx, 0, capacity - 1)

    def level(_: int, carry: tuple[chex.Array, chex.Array]) -> tuple[chex.Array, chex.Array]:
        nodes, pos = carry
        pos = pos >> 1
        parent = combine(nodes[2 * pos], nodes[2 * pos + 1])
        return nodes.at[pos].set(parent, indices_are_sorted=True), pos

    depth = bound.bit_length() - 1
    nodes, _ = jax.lax.fori_loop(0, depth, level, (nodes, pos))
    return nodes


@partial(jax.jit, static_argnames=("capacity",))
def _find_prefix_sum(nodes: chex.Array, values: chex.Array, *, capacity: int) -> chex.Array:
    """Root-to-leaf descent of a sum tree for every query value (any shape); see
    :meth:`SumTree.find_prefix_sum`. A subtree of zero mass is never entered."""
    bound = _next_pow2(capacity)

    def step(
        carry: tuple[chex.Array, chex.Array], _: None
    ) -> tuple[tuple[chex.Array, chex.Array], None]:
        node, v = carry
        left, right = nodes[2 * node], nodes[2 * node + 1]
        go_left = (right <= 0) | ((left > 0) & (v <= left))
        v = jnp.where(go_left, v, v - left)
        node = jnp.where(go_left, 2 * node, 2 * node + 1)
        return (node, v), None

    start = jnp.ones(values.shape, jnp.int32)
    depth = bound.bit_length() - 1
    (node, _), _ = jax.lax.scan(step, (start, values), None, length=depth)
    return node - bound


@partial(jax.jit, static_argnames=("batch_size", "stratified", "capacity"))
def _sample(
    nodes: chex.Array, key: chex.PRNGKey, *, batch_size: int, stratified: bool, capacity: int
) -> chex.Array:
    """Proportional (or stratified) draws from a sum tree; see :meth:`SumTree.sample`."""
    u = jax.random.uniform(key, (batch_size,), nodes.dtype)
    if stratified:
        u = (jnp.arange(batch_size, dtype=nodes.dtype) + u) / batch_size
    return _find_prefix_sum(nodes, u * nodes[1], capacity=capacity)


class _SegmentTree(struct.PyTreeNode):
    """Shared implementation of a binary reduction tree; see the module docstring.

    Subclasses set ``_op`` (a key of ``_COMBINE``: an associative, commutative binary op) and
    ``_identity`` (its neutral element). Only ``nodes`` is a pytree leaf; ``capacity`` is static.
    """

    nodes: chex.Array
    capacity: int = struct.field(pytree_node=False)

    _op: ClassVar[str]
    _identity: ClassVar[float]
    _allow_inf: ClassVar[bool]

    @classmethod
    def create(cls, capacity: int, dtype: Any = jnp.float32) -> _SegmentTree:
        """An empty tree: every node holds the reduction identity.

        Args:
            capacity: number of leaves, a positive Python int (static).
            dtype: floating dtype of the nodes (``float64`` needs ``jax_enable_x64``).

        Returns:
            A tree whose ``nodes`` has shape ``(2 * bound,)`` and the given dtype.

        Raises:
            ValueError: ``capacity`` is not a positive int or ``dtype`` is not floating.
        """
        name = f"{cls.__name__}.create"
        if isinstance(capacity, bool) or not isinstance(capacity, int | np.integer):
            raise ValueError(
                f"{name}: capacity must be a positive int, got {type(capacity).__name__} "
                f"{capacity!r}"
            )
        if capacity <= 0:
            raise ValueError(f"{name}: capacity must be a positive int, got {capacity}")
        dtype = jnp.dtype(dtype)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise ValueError(f"{name}: dtype must be a floating dtype, got {dtype}")
        capacity = int(capacity)
        nodes = jnp.full((2 * _next_pow2(capacity),), cls._identity, dtype=dtype)
        return cls(nodes=nodes, capacity=capacity)

    @property
    def bound(self) -> int:
        """Number of leaf slots, the smallest power of two ``>= capacity`` (static)."""
        return _next_pow2(self.capacity)

    @property
    def depth(self) -> int:
        """Number of levels between the root and the leaves, ``log2(bound)`` (static)."""
        return self.bound.bit_length() - 1

    @property
    def dtype(self) -> jnp.dtype:
        """Floating dtype of the nodes."""
        return self.nodes.dtype

    def root(self) -> chex.Array:
        """Reduction over all leaves, a scalar of ``dtype``."""
        return self.nodes[1]

    def leaves(self) -> chex.Array:
        """The first ``capacity`` leaves, shape ``(capacity,)``."""
        return self.nodes[self.bound : self.bound + self.capacity]

    def get(self, indices: chex.Array) -> chex.Array:
        """Leaf values at ``indices`` (any integer shape); the result has the same shape.

        Out-of-range indices are clamped by JAX's gather semantics inside jit; eagerly they
        raise ``IndexError``.
        """
        indices = jnp.asarray(indices)
        self._check_indices(indices, "get")
        return self.nodes[self.bound + indices]

    def set(self, indices: chex.Array, values: chex.Array) -> _SegmentTree:
        """Return a tree with ``leaf[indices[j]] = values[j]`` and all ancestors recomputed.

        Args:
            indices: integer array of shape ``()`` or ``(B,)``, leaf indices in
                ``[0, capacity)``. Duplicates are allowed: the LAST occurrence wins
                (deterministically, on every backend).
            values: values broadcastable to ``indices.shape``, cast to ``dtype``. They must
                be ``>= 0`` (``SumTree``: and finite; ``MinTree``: ``+inf`` clears a leaf).

        Returns:
            The updated tree. Work is ``O(B log B + B log N)``, no ``O(capacity)`` step.

        Raises:
            IndexError / ValueError: eagerly, for out-of-range indices, a non-integer index
            dtype, a bad shape, or negative / NaN (``SumTree``: also infinite) values.
            Inside jit the value checks cannot run; out-of-range indices are then ignored.
        """
        indices = jnp.asarray(indices)
        values = jnp.asarray(values)
        self._check_indices(indices, "set")
        if indices.ndim > 1:
            raise ValueError(
                f"{type(self).__name__}.set: indices must have shape () or (B,), "
                f"got {indices.shape}"
            )
        try:
            values = jnp.broadcast_to(values, indices.shape)
        except ValueError as err:
            raise ValueError(
                f"{type(self).__name__}.set: values of shape {values.shape} do not broadcast "
                f"to the indices' shape {indices.shape}"
            ) from err
        self._check_values(values)
        return self.set_unchecked(indices, values)

    def set_unchecked(self, indices: chex.Array, values: chex.Array) -> _SegmentTree:
        """:meth:`set` without the eager checks, for callers that guarantee valid values.

        ``indices`` (integer, shape ``()`` or ``(B,)``) outside ``[0, capacity)`` are ignored,
        eagerly as well as under jit, so a caller can mask out entries by mapping them to
        ``-1`` or ``capacity``. ``values`` must broadcast to ``indices.shape``.
        """
        indices = jnp.asarray(indices)
        idx = indices.reshape(-1).astype(jnp.int32)
        vals = jnp.broadcast_to(jnp.asarray(values), indices.shape).reshape(-1)
        if idx.shape[0] == 0:
            return self
        nodes = _set_leaves(
            self.nodes, idx, vals.astype(self.dtype), capacity=self.capacity, op=self._op
        )
        return self.replace(nodes=nodes)

    def _check_indices(self, indices: chex.Array, method: str) -> None:
        name = f"{type(self).__name__}.{method}"
        if not jnp.issubdtype(indices.dtype, jnp.integer):
            raise ValueError(f"{name}: indices must be integers, got dtype {indices.dtype}")
        if _is_concrete(indices) and indices.size:
            host = np.asarray(indices)
            bad = host[(host < 0) | (host >= self.capacity)]
            if bad.size:
                raise IndexError(
                    f"{name}: indices must lie in [0, {self.capacity}), got {bad[:8].tolist()}"
                )

    def _check_values(self, values: chex.Array) -> None:
        name = f"{type(self).__name__}.set"
        if not (
            jnp.issubdtype(values.dtype, jnp.floating) or jnp.issubdtype(values.dtype, jnp.integer)
        ):
            raise ValueError(f"{name}: values must be real numbers, got dtype {values.dtype}")
        if _is_concrete(values) and values.size:
            host = np.asarray(values, dtype=np.float64)
            bad = np.isnan(host) | (host < 0)
            if not type(self)._allow_inf:
                bad |= np.isinf(host)
            if bad.any():
                allowed = ">= 0" + ("" if type(self)._allow_inf else " and finite")
                raise ValueError(f"{name}: values must be {allowed}, got {host[bad][:8].tolist()}")


class SumTree(_SegmentTree):
    """Binary sum tree over ``capacity`` non-negative leaves (pure pytree state).

    ``nodes`` has shape ``(2 * bound,)``; see the module docstring for the layout and costs.
    All methods are pure (they return new trees), work under ``jit`` and ``vmap`` (a stack of
    trees has ``nodes`` of shape ``(T, 2 * bound)``; call the methods through ``jax.vmap``),
    and never touch more than ``O(B log N)`` nodes for a batch of ``B`` leaves.

    Example::

        tree = SumTree.create(5).set(jnp.array([0, 3]), jnp.array([1.0, 2.0]))
        tree.total()                                  # 3.0
        tree.find_prefix_sum(jnp.array([0.5, 1.0, 1.5]))  # [0, 0, 3]
    """

    _op = "sum"
    _identity = 0.0
    _allow_inf = False

    def total(self) -> chex.Array:
        """Sum of all leaves (the root), a scalar of ``dtype``."""
        return self.root()

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
        values = jnp.asarray(values, self.dtype)
        return _find_prefix_sum(self.nodes, values, capacity=self.capacity)

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
        if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
            raise ValueError(f"SumTree.sample: batch_size must be an int, got {batch_size!r}")
        if batch_size < 0:
            raise ValueError(f"SumTree.sample: batch_size must be >= 0, got {batch_size}")
        return _sample(
            self.nodes,
            key,
            batch_size=int(batch_size),
            stratified=bool(stratified),
            capacity=self.capacity,
        )


class MinTree(_SegmentTree):
    """Binary min tree over ``capacity`` leaves; empty leaves hold ``+inf``.

    Same layout, costs and update rules as :class:`SumTree`. The prioritized buffer keeps one
    next to its sum tree so that the smallest stored priority, needed for the importance
    weight bound ``max_w = (N * p_min / total) ** -beta``, is exact after overwrites (a
    running minimum, as in Tianshou, only ever decreases).
    """

    _op = "min"
    _identity = float("inf")
    _allow_inf = True

    def min(self) -> chex.Array:
        """Minimum over all leaves (``+inf`` when nothing was written), a scalar."""
        return self.root()
