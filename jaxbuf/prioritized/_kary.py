"""Array kernels of the wide (``ARITY``-ary) reduction trees behind ``SumTree`` and ``MinTree``.

Layout: ``levels = (L[0], ..., L[D])``, flat arrays from the root to the leaves. ``L[D]``
holds the leaves, ``L[0]`` the root alone, and node ``i`` of ``L[d]`` has the children
``i * ARITY .. i * ARITY + ARITY - 1`` of ``L[d + 1]``, whose left fold it holds::

    L[d][i] = ((x[0] op x[1]) op x[2]) ... op x[ARITY - 1],   x[j] = L[d + 1][i * ARITY + j]

With ``c[D] = capacity`` and ``c[d] = ceil(c[d + 1] / ARITY)`` down to ``c[0] = 1`` nodes in
use per level, ``L[d]`` (``d >= 1``) has ``ARITY * c[d - 1]`` entries, so every node in use
has all its children in bounds; the padding (under ``ARITY`` entries per level) holds the
reduction's identity.

Every function here is shape-static and loop-free (the levels and the ``ARITY`` children are
unrolled in Python, so XLA fuses each level into a few elementwise kernels) and touches
``O(B * ARITY)`` entries per level for ``B`` indices or queries.
"""

from __future__ import annotations

import chex
import jax.numpy as jnp

ARITY = 8
"""Children per node: a node's children are one 32-byte row in float32 and 2**20 leaves need
7 levels. 8 measured faster than 16 and 32 on the 2-core CPU (docs/prioritized.md)."""

COMBINE = {"sum": jnp.add, "min": jnp.minimum}


def level_sizes(capacity: int) -> tuple[int, ...]:
    """Lengths of ``L[0] .. L[D]`` for ``capacity`` leaves (``D >= 1``)."""
    used = [capacity]
    while used[-1] > 1 or len(used) == 1:
        used.append(-(-used[-1] // ARITY))
    used.reverse()  # used[0] == 1 is the root
    return (1,) + tuple(ARITY * n for n in used[:-1])


def fresh(capacity: int, identity: float, dtype: jnp.dtype) -> tuple[chex.Array, ...]:
    """The levels of an empty tree: every entry holds ``identity``."""
    return tuple(jnp.full((n,), identity, dtype) for n in level_sizes(capacity))


def fold_rows(rows: chex.Array, op: str) -> chex.Array:
    """Left fold of ``rows`` (B, ARITY) along its last axis, column by column."""
    combine = COMBINE[op]
    out = rows[:, 0]
    for j in range(1, rows.shape[1]):
        out = combine(out, rows[:, j])
    return out


def _last_occurrence(leaves: chex.Array, target: chex.Array) -> tuple[chex.Array, chex.Array]:
    """Mask of the last occurrence of each index in ``target`` (int32[B]), without a sort.

    Entry ``j`` writes the key ``-(j + 1)`` to its slot, first with ``set`` (so the slot then
    holds one of its own entries' keys, whatever it held before), then with an order-free
    ``min`` scatter: the slot ends up holding the smallest key, that of its last occurrence,
    and entry ``j`` is the winner where the slot holds its key. Out-of-range targets
    (``>= len(leaves)``) are dropped and never win. The keys are exact in the leaves' dtype
    (the caller checks ``B``). Returns ``(mask, scratch)``: the leaves with keys written in
    the touched slots, each of which the caller then overwrites.
    """
    n = leaves.shape[0]
    key = -(jnp.arange(target.shape[0], dtype=leaves.dtype) + 1)
    scratch = leaves.at[target].set(key, mode="drop").at[target].min(key, mode="drop")
    return (target < n) & (scratch[jnp.minimum(target, n - 1)] == key), scratch


def _last_occurrence_sorted(target: chex.Array) -> chex.Array:
    """Mask of the last occurrence of each index in ``target`` by a stable sort (used when
    the batch is too large for exact float keys)."""
    order = jnp.argsort(target, stable=True)
    s = target[order]
    last = jnp.concatenate([s[1:] != s[:-1], jnp.ones((1,), bool)])
    return jnp.zeros(target.shape, bool).at[order].set(last)


def set_leaves(
    levels: tuple[chex.Array, ...], idx: chex.Array, vals: chex.Array, *, capacity: int, op: str
) -> tuple[chex.Array, ...]:
    """Write ``vals`` (B,) to leaves ``idx`` (int32[B]) and recompute every ancestor.

    The last occurrence of a duplicate index wins; indices outside ``[0, capacity)`` are
    dropped. Each ancestor is recomputed as the fold of its children's current values (never
    incremented), so the tree equals a full rebuild bit for bit. Work: three ``B``-element
    scatters for the duplicates, the leaf scatter, then per level a gather of ``B x ARITY``
    children and a ``B``-element scatter; no step depends on ``capacity``.
    """
    leaves = levels[-1]
    n = leaves.shape[0]
    # Out-of-range entries target ``n`` (dropped), or ``n + 1`` if the root is NaN: a data
    # dependence on the root orders these writes after every read of a previous update
    # (the root is computed last), so XLA writes the leaves in place instead of copying them
    # to keep an unordered earlier read valid (two ``set`` calls in one jitted step).
    after_root = n + (levels[0][0] != levels[0][0]).astype(idx.dtype)
    target = jnp.where((idx >= 0) & (idx < capacity), idx, after_root)
    if idx.shape[0] < 2 ** (jnp.finfo(leaves.dtype).nmant + 1):
        win, leaves = _last_occurrence(leaves, target)
    else:
        win = _last_occurrence_sorted(target)
    out = list(levels)
    out[-1] = leaves.at[jnp.where(win, target, n)].set(vals, mode="drop")

    # An out-of-range entry walks up from a clamped leaf, whose ancestors are recomputed to
    # the values they already hold. Parents listed twice get identical values.
    node = jnp.clip(idx, 0, capacity - 1)
    for d in range(len(levels) - 2, -1, -1):
        node = node // ARITY
        rows = out[d + 1].reshape(-1, ARITY)[node]
        out[d] = out[d].at[node].set(fold_rows(rows, op))
    return tuple(out)


def materialize(*xs: chex.Array) -> tuple[chex.Array, ...]:
    """``xs`` (same leading size B) unchanged, computed once: written through an identity
    scatter, which XLA does not fuse into consumers, so a chain of levels is not recomputed
    by every later kernel that reads it."""
    out = []
    for x in xs:
        iota = jnp.arange(x.shape[0])
        out.append(jnp.zeros_like(x).at[iota].set(x, unique_indices=True))
    return tuple(out)


def find_prefix(levels: tuple[chex.Array, ...], values: chex.Array) -> chex.Array:
    """Leaf index for each query of a sum tree (``values`` of any shape, the tree's dtype).

    At a node of total ``t`` with children folded left to right into ``acc`` (``acc[-1] = 0``,
    the same order as the stored totals, so the last ``acc`` is ``t``), a query
    ``0 < v <= t`` goes to the one child ``j`` with ``acc[j - 1] < v <= acc[j]``, which has
    positive mass because ``acc`` is non-decreasing, and loses ``acc[j - 1]``. ``v <= 0`` is
    raised to ``tiny`` (the smallest positive normal float), reaching the first positive
    child; ``v > t`` (round-off in ``u * total``) goes to the last positive child and stays
    above every total below it. So a zero-mass subtree is never entered; on an empty tree no
    child qualifies and the result is 0. Returns int32 indices shaped like ``values``.
    """
    shape = values.shape
    v = values.reshape(-1)
    total = jnp.broadcast_to(levels[0][0], v.shape)
    node = jnp.zeros(v.shape, jnp.int32)
    for level in levels[1:]:
        v, node, total = descend(level.reshape(-1, ARITY)[node], v, node, total)
    return node.reshape(shape)


def descend_step(
    rows: chex.Array, v: chex.Array, node: chex.Array, total: chex.Array
) -> tuple[chex.Array, chex.Array, chex.Array]:
    """One level of the prefix-sum descent (the rule in :func:`find_prefix`'s docstring).

    ``rows`` float[Q, ARITY]: the children's sums of each query's current ``node`` (int32[Q],
    whose sum is ``total``); ``v`` float[Q], the remaining query. Returns ``(v, node,
    total)`` one level down: the remaining query, the chosen child's index and its sum.
    Unmaterialized: for a loop body, whose carry is computed once anyway; a chain of
    levels outside a loop goes through :func:`descend`.
    """
    tiny = jnp.asarray(jnp.finfo(v.dtype).tiny, v.dtype)
    zero = jnp.zeros_like(v)
    over = v > total
    v = jnp.maximum(v, tiny)
    child, before, sub = jnp.zeros_like(node), zero, zero
    last, last_sub = jnp.zeros_like(node), zero
    acc = zero
    for j in range(ARITY):
        x = rows[:, j]
        nxt = x if j == 0 else acc + x
        hit = (acc < v) & (v <= nxt)
        child = jnp.where(hit, j, child)
        before = jnp.where(hit, acc, before)
        sub = jnp.where(hit, x, sub)
        last = jnp.where(x > 0, j, last)
        last_sub = jnp.where(x > 0, x, last_sub)
        acc = nxt
    return (
        jnp.where(over, jnp.inf, v - before),
        node * ARITY + jnp.where(over, last, child),
        jnp.where(over, last_sub, sub),
    )


def descend(
    rows: chex.Array, v: chex.Array, node: chex.Array, total: chex.Array
) -> tuple[chex.Array, chex.Array, chex.Array]:
    """:func:`descend_step`, its three results materialized (computed once, not fused into
    every later level that reads them)."""
    return materialize(*descend_step(rows, v, node, total))
