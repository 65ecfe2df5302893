"""Pure, jittable segment trees (sum and min) for prioritized experience replay.

Layout
------
A wide tree: every internal node has ``ARITY = 8`` children (``jaxbuf.prioritized._kary``).
``levels`` is a tuple of flat arrays from the root to the leaves: ``levels[0]`` holds the
root alone, ``levels[-1]`` the ``capacity`` leaves padded to a multiple of 8, and node ``i``
of ``levels[d]`` holds the left fold (``op`` = ``+`` or ``min``) of its children
``8i .. 8i + 7`` in ``levels[d + 1]``. Padding and never-written leaves hold the identity of
the reduction (``0`` for :class:`SumTree`, ``+inf`` for :class:`MinTree`). ``depth =
ceil(log8(capacity))``: 7 levels below the root for 2**20 leaves instead of the 20 of a
binary tree (Tianshou's ``SegmentTree``, tianshou-semantics.md 8.1); the padding is under 8
entries per level.

Why: on XLA:CPU a prioritized step costs mostly per-kernel overhead, so the number of
dependent steps matters more than the arithmetic (docs/prioritized.md has the profile). The
levels and the 8 children are unrolled in Python (no ``while`` loop); a descent step reads
one contiguous row of children and folds it in registers, an update step folds one row per
level; duplicate indices are resolved with ``B``-element scatters instead of a sort.

Cost
----
``set`` of ``B`` leaves: three ``B``-element scatters and a gather to resolve duplicates, the
leaf scatter, then per level a gather of ``B x 8`` children and a ``B``-element scatter:
``O(B log N)`` in all, with no step whose cost depends on the capacity (no dense scatter, no
rebuild, no capacity-sized ``bincount`` as in flashbax). Under ``jit`` with the tree donated
(or carried through a ``lax.scan``/``fori_loop``), XLA performs the scatters in place. Queries
(``find_prefix_sum``, ``sample``) read one row per level: ``O(B log N)``. The kernels are
jitted, so eager calls compile once per shape instead of op by op; validation runs outside.

Exactness
---------
Every ancestor of a written leaf is *recomputed as the fold of its children's current
values* instead of being incremented by a delta, so rounding error does not accumulate over
many updates: after any sequence of updates each internal node equals the (float) fold of its
current children, exactly as if the tree were rebuilt. This avoids the drift of flashbax's
delta-propagating tree (flashbax issue 52) in which the float32 root and the leaf sum disagree
after many updates and zero-priority items end up being sampled.
"""

from __future__ import annotations

from functools import partial
from typing import Any, ClassVar

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxbuf._core import random as fast_random
from jaxbuf.prioritized import _kary

__all__ = ["MinTree", "SumTree"]


def _is_concrete(x: Any) -> bool:
    """True when ``x`` holds concrete values (eager call), False inside jit/vmap/grad."""
    return not isinstance(x, jax.core.Tracer)


@partial(jax.jit, static_argnames=("capacity", "op"))
def _set_leaves(
    levels: tuple[chex.Array, ...], idx: chex.Array, vals: chex.Array, *, capacity: int, op: str
) -> tuple[chex.Array, ...]:
    """Jitted :func:`jaxbuf.prioritized._kary.set_leaves` (last duplicate wins, indices
    outside ``[0, capacity)`` dropped, ancestors recomputed from their children)."""
    return _kary.set_leaves(levels, idx, vals, capacity=capacity, op=op)


@jax.jit
def _find_prefix_sum(levels: tuple[chex.Array, ...], values: chex.Array) -> chex.Array:
    """Root-to-leaf descent of a sum tree for every query value (any shape); see
    :meth:`SumTree.find_prefix_sum`. A subtree of zero mass is never entered."""
    return _kary.find_prefix(levels, values)


@partial(jax.jit, static_argnames=("batch_size", "stratified"))
def _sample(
    levels: tuple[chex.Array, ...], key: chex.PRNGKey, *, batch_size: int, stratified: bool
) -> chex.Array:
    """Proportional (or stratified) draws from a sum tree; see :meth:`SumTree.sample`."""
    dtype = levels[0].dtype
    u = fast_random.uniform(key, batch_size, dtype)
    if stratified:
        u = (jnp.arange(batch_size, dtype=dtype) + u) / batch_size
    return _kary.find_prefix(levels, u * levels[0][0])


class _SegmentTree(struct.PyTreeNode):
    """Shared implementation of a wide reduction tree; see the module docstring.

    Subclasses set the default of ``op`` (``"sum"`` or ``"min"``: an associative, commutative
    binary op) and ``_identity`` (its neutral element). The only pytree leaves are the
    ``depth + 1`` flat arrays of ``levels`` (root first, the ``bound`` padded leaves last);
    ``capacity`` and ``op`` are static. ``op`` is static data rather than a class attribute so
    that a ``SumTree`` and a ``MinTree`` of equal capacity never have equal treedefs: JAX 0.10
    compares dataclass treedefs by field names and static values, not by class, so a jitted
    function's cache could otherwise hand one tree's compiled program to the other.
    """

    levels: tuple[chex.Array, ...]
    capacity: int = struct.field(pytree_node=False)
    op: str = struct.field(pytree_node=False, default="sum")

    _identity: ClassVar[float]
    _allow_inf: ClassVar[bool]

    @classmethod
    def create(cls, capacity: int, dtype: Any = jnp.float32) -> _SegmentTree:
        """An empty tree: every node holds the reduction identity.

        Args:
            capacity: number of leaves, a positive Python int (static).
            dtype: floating dtype of the tree (``float64`` needs ``jax_enable_x64``).

        Returns:
            A tree whose arrays all hold the identity, in the given dtype.

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
        return cls(levels=_kary.fresh(capacity, cls._identity, dtype), capacity=capacity)

    @property
    def bound(self) -> int:
        """Number of leaf slots, ``capacity`` rounded up to a multiple of 8 (static)."""
        return self.levels[-1].shape[-1]

    @property
    def depth(self) -> int:
        """Number of levels below the root, ``max(1, ceil(log8(capacity)))`` (static)."""
        return len(self.levels) - 1

    @property
    def dtype(self) -> jnp.dtype:
        """Floating dtype of the tree."""
        return self.levels[0].dtype

    def root(self) -> chex.Array:
        """Reduction over all leaves, a scalar of ``dtype``."""
        return self.levels[0][..., 0]

    def leaves(self) -> chex.Array:
        """The first ``capacity`` leaves, shape ``(capacity,)``."""
        return self.levels[-1][..., : self.capacity]

    def get(self, indices: chex.Array) -> chex.Array:
        """Leaf values at ``indices`` (any integer shape); the result has the same shape.

        Out-of-range indices are clamped by JAX's gather semantics inside jit; eagerly they
        raise ``IndexError``.
        """
        indices = jnp.asarray(indices)
        self._check_indices(indices, "get")
        return self.levels[-1][indices]

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
        levels = _set_leaves(
            self.levels, idx, vals.astype(self.dtype), capacity=self.capacity, op=self.op
        )
        return self.replace(levels=levels)

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
    """Sum tree over ``capacity`` non-negative leaves (pure pytree state).

    8 children per node; see the module docstring for the layout and costs.
    All methods are pure (they return new trees), work under ``jit`` and ``vmap`` (a stack of
    trees has ``levels[-1]`` of shape ``(T, bound)``; call the methods through ``jax.vmap``),
    and never touch more than ``O(B log N)`` entries for a batch of ``B`` leaves.

    Example::

        tree = SumTree.create(5).set(jnp.array([0, 3]), jnp.array([1.0, 2.0]))
        tree.total()                                  # 3.0
        tree.find_prefix_sum(jnp.array([0.5, 1.0, 1.5]))  # [0, 0, 3]
    """

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
        return _find_prefix_sum(self.levels, values)

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
        return _sample(self.levels, key, batch_size=int(batch_size), stratified=bool(stratified))


class MinTree(_SegmentTree):
    """Min tree over ``capacity`` leaves (8 children per node); empty leaves hold ``+inf``.

    Same layout, costs and update rules as :class:`SumTree`. The prioritized buffer keeps one
    next to its sum tree so that the smallest stored priority, needed for the importance
    weight bound ``max_w = (N * p_min / total) ** -beta``, is exact after overwrites (a
    running minimum, as in Tianshou, only ever decreases).
    """

    op: str = struct.field(pytree_node=False, default="min")
    _identity = float("inf")
    _allow_inf = True

    def min(self) -> chex.Array:
        """Minimum over all leaves (``+inf`` when nothing was written), a scalar."""
        return self.root()
