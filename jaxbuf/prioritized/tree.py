"""The one reduction tree of jaxbuf's prioritized replay, with its checks.

:class:`Tree` is a wide (8 children per node) tree over ``capacity`` non-negative leaves whose
internal nodes hold a sum, a minimum or both (its ``kind``); array layout and costs in
:mod:`jaxbuf.prioritized._tree_kernels`. The public trees are thin views of it:

* :class:`~jaxbuf.prioritized.PriorityTree` (kind ``"sum+min"``, the prioritized buffers'
  tree): a leaf of 0 is an empty slot, which the minimum skips;
* :class:`~jaxbuf.prioritized.SumTree` (``"sum"``) and :class:`~jaxbuf.prioritized.MinTree`
  (``"min"``, unwritten leaves ``+inf``).

Behaviour common to all of them:

* Writes recompute every ancestor of a written leaf from its children (never by adding
  deltas), so after any sequence of updates the tree equals a rebuild from its leaves, bit
  for bit: the root never drifts from the sum of the leaves.
* With duplicate indices in one write the last occurrence wins, on every backend, for any
  batch size: below ``2 ** (mantissa bits + 1)`` entries (2**24 in float32) without a sort,
  from there on with a stable sort (``O(B log B)``).
* ``set`` / ``set_unchecked`` of ``B`` leaves and the queries cost ``O(B log N)`` with no
  capacity-sized step; under ``jit`` with the tree donated (or carried through a
  ``lax.scan``) the writes happen in place.
* Everything is pure and works under ``jit`` and ``vmap``; the eager checks raise
  ``IndexError`` / ``ValueError`` naming the public class and method.
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
from jaxbuf._core.validate import check_range
from jaxbuf.errors import ConfigError, IndexRangeError, InputError
from jaxbuf.prioritized import _tree_kernels as K

__all__ = ["Tree"]

_NAMES = {"sum": "SumTree", "min": "MinTree", "sum+min": "PriorityTree"}

_set_leaves = jax.jit(K.set_leaves, static_argnames=("capacity", "kind"))
_find_prefix = jax.jit(K.find_prefix, static_argnames=("capacity",))
_reduce_range = jax.jit(K.reduce_range, static_argnames=("capacity", "kind", "op"))
_build = jax.jit(K.build, static_argnames=("capacity", "kind"))


@partial(jax.jit, static_argnames=("capacity", "batch_size", "stratified"))
def _sample(leaves, bottom, upper, key, *, capacity: int, batch_size: int, stratified: bool):
    """Proportional (or stratified) draws; see :meth:`Tree.sample`."""
    dtype = leaves.dtype
    u = fast_random.uniform(key, batch_size, dtype)
    if stratified:
        u = (jnp.arange(batch_size, dtype=dtype) + u) / batch_size
    return K.find_prefix(leaves, bottom, upper, u * upper[0, 0], capacity=capacity)


def _concrete(x: Any) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _check_capacity(name: str, capacity: Any) -> int:
    if isinstance(capacity, bool) or not isinstance(capacity, int | np.integer):
        raise InputError(
            f"jaxbuf: {name}: capacity must be a positive int, got {type(capacity).__name__} "
            f"{capacity!r}"
        )
    if capacity <= 0:
        raise InputError(f"jaxbuf: {name}: capacity must be a positive int, got {capacity}")
    return int(capacity)


class Tree(struct.PyTreeNode):
    """Reduction tree over ``capacity`` leaves (pure pytree state); see the module docstring.

    Attributes:
      leaves: float ``[bound]``, the leaves (``bound`` = capacity rounded up to a multiple
        of 8) followed by padding.
      bottom: float ``[ceil(bound / 64), 8 K]``, the ``K`` reductions of the nodes right
        above the leaves, 8 nodes per row.
      upper: float ``[R, 8 K]``, those of every level above, packed root first.
      capacity: static int, number of leaves.
      kind: static, ``"sum"``, ``"min"`` or ``"sum+min"``; a static field (not only the
        view's class) so that trees of different kinds never share a treedef, which jitted
        functions compare by field names and static values.
    """

    leaves: chex.Array
    bottom: chex.Array
    upper: chex.Array
    capacity: int = struct.field(pytree_node=False)
    kind: str = struct.field(pytree_node=False, default="sum+min")

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(cls, capacity: int, dtype: Any = jnp.float32, kind: str = "sum+min") -> Tree:
        """An empty tree of ``capacity`` leaves (positive int) in ``dtype`` (floating).

        Raises ``ValueError`` on a bad ``capacity``, ``dtype`` or ``kind``."""
        if kind not in K.KINDS:
            raise ConfigError(
                f"jaxbuf: Tree.create: kind must be one of {sorted(K.KINDS)}, got {kind!r}"
            )
        name = f"{_NAMES[kind]}.create"
        capacity = _check_capacity(name, capacity)
        dtype = jnp.dtype(dtype)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise ConfigError(f"jaxbuf: {name}: dtype must be a floating dtype, got {dtype}")
        leaves, bottom, upper = K.fresh(capacity, kind, dtype)
        return cls(leaves=leaves, bottom=bottom, upper=upper, capacity=capacity, kind=kind)

    @classmethod
    def from_values(cls, values: chex.Array, kind: str) -> Tree:
        """The tree whose leaves are ``values`` (float ``[..., capacity]``; leading axes give
        a stack of trees), built bottom-up in ``O(capacity)``: equal, bit for bit, to an
        empty tree after ``set(arange(capacity), values)``. Values are checked as in
        :meth:`set` when concrete."""
        values = jnp.asarray(values)
        if not jnp.issubdtype(values.dtype, jnp.floating) or values.ndim < 1:
            raise InputError(
                f"jaxbuf: {_NAMES[kind]}.from_values: values must be a floating array [..., "
                f"capacity], "
                f"got {values.dtype}{list(values.shape)}"
            )
        capacity = _check_capacity(f"{_NAMES[kind]}.from_values", values.shape[-1])
        tree = cls.create(capacity, values.dtype, kind)
        tree._check_values(values, "from_values")
        leaves, bottom, upper = _build(values, capacity=capacity, kind=kind)
        return tree.replace(leaves=leaves, bottom=bottom, upper=upper)

    # ------------------------------------------------------------------ reading
    @property
    def name(self) -> str:
        """The public class this tree backs, for messages."""
        return _NAMES[self.kind]

    @property
    def dtype(self) -> jnp.dtype:
        """Floating dtype of the tree."""
        return self.leaves.dtype

    @property
    def bound(self) -> int:
        """Number of leaf slots, ``capacity`` rounded up to a multiple of 8 (static)."""
        return self.leaves.shape[-1]

    @property
    def depth(self) -> int:
        """Number of levels below the root, ``max(2, ceil(log8(capacity)))`` (static)."""
        return len(K.level_counts(self.capacity)) - 1

    def root(self, op: str | None = None) -> chex.Array:
        """Reduction ``op`` (default: the first of the kind) over all leaves, a scalar."""
        ops = K.KINDS[self.kind]
        return self.upper[..., 0, ops.index(op or ops[0]) * K.ARITY]

    def levels(self, op: str | None = None) -> tuple[chex.Array, ...]:
        """Reduction ``op`` (default: the first of the kind) of every node, level by level:
        the root (shape ``(1,)``), each internal level padded to a multiple of 8 with the
        identity, and last the leaves themselves (``bound`` entries). For inspection; a
        stack of trees gives arrays with its leading axes."""
        k = K.KINDS[self.kind].index(op or K.KINDS[self.kind][0])
        cols = slice(k * K.ARITY, (k + 1) * K.ARITY)
        batch = self.leaves.shape[:-1]
        off = K.row_offsets(self.capacity)
        blocks = [self.upper[..., off[d] : off[d + 1], cols] for d in range(len(off) - 1)]
        flat = [b.reshape(*batch, -1) for b in [*blocks, self.bottom[..., cols]]]
        return (flat[0][..., :1], *flat[1:], self.leaves)

    def values(self) -> chex.Array:
        """The first ``capacity`` leaves, shape ``(capacity,)``."""
        return self.leaves[..., : self.capacity]

    def get(self, indices: chex.Array, check: bool = True) -> chex.Array:
        """Leaf values at ``indices`` (any integer shape). With ``check``, out-of-range
        indices raise ``IndexError`` eagerly; inside jit (or without ``check``) JAX's gather
        clamps them."""
        indices = jnp.asarray(indices)
        if check:
            self._check_indices(indices, "get")
        return self.leaves[indices]

    def find_prefix_sum(self, values: chex.Array) -> tuple[chex.Array, chex.Array]:
        """``(index, leaf value)`` of the leaf whose prefix-sum interval holds each query.

        For ``0 < v <= total`` the smallest ``i`` with ``v <= cumsum(leaves)[i]`` (ties go
        left, as Tianshou's ``get_prefix_sum_idx``). The descent never enters a subtree of
        zero mass, so results are clamped to leaves of positive mass: ``v <= 0`` gives the
        first, ``v > total`` the last. int32, shaped like ``values``; 0 on an empty tree.
        """
        self._need_sum("find_prefix_sum")
        values = jnp.asarray(values, self.dtype)
        return _find_prefix(self.leaves, self.bottom, self.upper, values, capacity=self.capacity)

    def sample(
        self, key: chex.PRNGKey, batch_size: int, stratified: bool = False
    ) -> tuple[chex.Array, chex.Array]:
        """``batch_size`` draws with probability ``leaf[i] / total``: ``(int32 indices, their
        leaf values)``. ``stratified``: one draw in each of ``batch_size`` equal segments of
        the mass, ascending. Only leaves of positive mass are drawn; on an empty tree every
        draw is leaf 0."""
        self._need_sum("sample")
        name = f"{self.name}.sample"
        if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
            raise InputError(f"jaxbuf: {name}: batch_size must be an int, got {batch_size!r}")
        if batch_size < 0:
            raise InputError(f"jaxbuf: {name}: batch_size must be >= 0, got {batch_size}")
        return _sample(
            self.leaves,
            self.bottom,
            self.upper,
            key,
            capacity=self.capacity,
            batch_size=int(batch_size),
            stratified=bool(stratified),
        )

    def reduce(self, start: Any = 0, end: Any = None, op: str | None = None) -> chex.Array:
        """Reduction ``op`` (default: the first of the kind) of the leaves ``[start, end)``.

        ``end=None`` means ``capacity``; a negative ``end`` counts from the end, as in Python;
        ``start >= end`` gives the identity (sum 0, min ``+inf``). ``start`` in
        ``[0, capacity]`` and ``end`` in ``[-capacity, capacity]``, integers of any
        broadcastable shapes: out-of-range values raise ``IndexError`` eagerly and are
        clamped inside jit. ``reduce()`` is the root itself; otherwise ``O(log N)`` per
        query (a sum may then differ from the root's folding order in the last bits).
        """
        ops = K.KINDS[self.kind]
        op = op or ops[0]
        if isinstance(start, int) and start == 0 and end is None:
            return self.root(op)
        name = f"{self.name}.reduce"
        n = self.capacity
        start = jnp.asarray(start)
        end = jnp.asarray(n if end is None else end)
        for what, x, low in (("start", start, 0), ("end", end, -n)):
            if not jnp.issubdtype(x.dtype, jnp.integer):
                raise InputError(f"jaxbuf: {name}: {what} must be an integer, got dtype {x.dtype}")
            if _concrete(x) and x.size:
                host = np.asarray(x)
                bad = host[(host < low) | (host > n)]
                if bad.size:
                    raise IndexRangeError(
                        f"jaxbuf: {name}: {what} must lie in [{low}, {n}], got {bad[:8].tolist()}"
                    )
        end = jnp.where(end < 0, end + n, end)
        start, end = jnp.broadcast_arrays(start, end)
        lo = jnp.clip(start, 0, n).astype(jnp.int32)
        hi = jnp.clip(end, 0, n).astype(jnp.int32)
        return _reduce_range(
            self.leaves, self.bottom, self.upper, lo, hi, capacity=n, kind=self.kind, op=op
        )

    # ------------------------------------------------------------------ writing
    def set(self, indices: chex.Array, values: chex.Array) -> Tree:
        """:meth:`set_unchecked` after eager checks: ``indices`` integer, shape ``()`` or
        ``(B,)``, in ``[0, capacity)``; ``values`` broadcastable to them, ``>= 0`` and finite
        (a ``"min"`` tree also takes ``+inf``, which clears a leaf).

        Raises:
            IndexError / ValueError: eagerly, naming the bad entries. Inside jit the checks
            cannot look at values; out-of-range indices are then ignored.
        """
        indices = jnp.asarray(indices)
        values = jnp.asarray(values)
        self._check_indices(indices, "set")
        if indices.ndim > 1:
            raise InputError(
                f"jaxbuf: {self.name}.set: indices must have shape () or (B,), got {indices.shape}"
            )
        try:
            values = jnp.broadcast_to(values, indices.shape)
        except ValueError as err:
            raise InputError(
                f"jaxbuf: {self.name}.set: values of shape {values.shape} do not broadcast to the "
                f"indices' shape {indices.shape}"
            ) from err
        self._check_values(values, "set")
        return self.set_unchecked(indices, values)

    def set_unchecked(self, indices: chex.Array, values: chex.Array) -> Tree:
        """``leaf[indices[j]] = values[j]`` with every ancestor recomputed, no checks.

        ``indices``: integer, shape ``()`` or ``(B,)``; the last occurrence of a duplicate
        wins; entries outside ``[0, capacity)`` are ignored (a caller masks entries out by
        mapping them to -1). ``values`` (broadcast to ``indices.shape``) must be valid for
        the kind (see :meth:`set`). Cost ``O(B log N)``; in place when donated.
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
            kind=self.kind,
        )
        return self.replace(leaves=leaves, bottom=bottom, upper=upper)

    # ------------------------------------------------------------------ checks
    def _need_sum(self, method: str) -> None:
        if "sum" not in K.KINDS[self.kind]:
            raise InputError(f"jaxbuf: {self.name} has no {method}: it holds no sums")

    def _check_indices(self, indices: chex.Array, method: str) -> None:
        name = f"{self.name}.{method}"
        if not jnp.issubdtype(indices.dtype, jnp.integer):
            raise InputError(f"jaxbuf: {name}: indices must be integers, got dtype {indices.dtype}")
        if indices.size:
            check_range(name, "indices", indices, self.capacity)

    def _check_values(self, values: chex.Array, method: str) -> None:
        name = f"{self.name}.{method}"
        if not (
            jnp.issubdtype(values.dtype, jnp.floating) or jnp.issubdtype(values.dtype, jnp.integer)
        ):
            raise InputError(
                f"jaxbuf: {name}: values must be real numbers, got dtype {values.dtype}"
            )
        if _concrete(values) and values.size:
            host = np.asarray(values, dtype=np.float64)
            allow_inf = self.kind == "min"
            bad = np.isnan(host) | (host < 0) | (np.isinf(host) & (not allow_inf))
            if bad.any():
                allowed = ">= 0" + ("" if allow_inf else " and finite")
                raise InputError(
                    f"jaxbuf: {name}: values must be {allowed}, got {host[bad][:8].tolist()}"
                )
