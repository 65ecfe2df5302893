"""Array kernels of the 8-ary reduction tree behind ``PriorityTree``, ``SumTree`` and ``MinTree``.

A tree has a *kind*: the reductions every internal node holds, ``"sum"``, ``"min"`` or
``"sum+min"`` (both, the prioritized buffers' tree). Layout, for ``capacity`` leaves:
``c[D] = capacity`` and ``c[d] = ceil(c[d + 1] / ARITY)`` down to ``c[0] = 1`` nodes per
level, with ``D >= 2`` (a capacity of at most 8 gets a root with a single child).

* ``leaves``: float ``[ARITY * c[D - 1]]`` (the ``bound``); unwritten slots and the padding
  hold the empty value, 0 (``"sum"``, ``"sum+min"``) or ``+inf`` (``"min"``). In a
  ``"sum+min"`` tree a leaf of 0 is an empty slot, which the minimum skips.
* Internal node ``q`` of level ``d < D`` lives in row ``q // ARITY`` of its level's block
  ``[rows, K * ARITY]`` (``K`` reductions), reduction ``k`` in column ``k * ARITY + q % ARITY``.
  Row ``p`` of level ``d + 1`` thus holds everything about the children of node ``p`` of
  level ``d`` in one contiguous read (64 bytes for ``"sum+min"`` in float32). The root is
  row 0 of level 0, columns ``0`` and ``ARITY``. Unused entries hold the identities (sum 0,
  min ``+inf``).
* ``bottom``: the block of level ``D - 1``; ``upper``: the blocks of levels ``0 .. D - 2``
  stacked, level ``d`` from row ``off[d]`` (:func:`row_offsets`).

A node holds the left fold of its ``ARITY`` children (``+`` or ``min``). Writes recompute
every ancestor of a written leaf from its children, never by adding deltas, so the tree always
equals a rebuild from its leaves bit for bit (:func:`build`). All kernels are shape-static;
levels and children are unrolled in Python. Why this layout: docs/design.md.
"""

from __future__ import annotations

import chex
import jax.numpy as jnp
from jax import lax

ARITY = 8
"""Children per node: one 32-byte row in float32; 2**20 leaves need 7 levels. Why 8:
docs/design.md, "The priority tree"."""

KINDS: dict[str, tuple[str, ...]] = {"sum": ("sum",), "min": ("min",), "sum+min": ("sum", "min")}
"""The reductions each kind of tree keeps, in column order."""

IDENTITY = {"sum": 0.0, "min": float("inf")}
EMPTY_LEAF = {"sum": 0.0, "min": float("inf"), "sum+min": 0.0}
_COMBINE = {"sum": jnp.add, "min": jnp.minimum}


def level_counts(capacity: int) -> tuple[int, ...]:
    """``c[0] .. c[D]``: nodes in use per level, root (1) first, ``capacity`` last."""
    used = [capacity]
    while used[-1] > 1 or len(used) < 3:
        used.append(-(-used[-1] // ARITY))
    return tuple(reversed(used))


def row_offsets(capacity: int) -> tuple[int, ...]:
    """``off[0] .. off[D - 1]``: first row of levels ``0 .. D - 2`` in ``upper``
    (``off[D - 1]`` is its row count)."""
    c = level_counts(capacity)
    off = [0, 1]
    for d in range(1, len(c) - 2):
        off.append(off[-1] + c[d - 1])
    return tuple(off)


def exact_key_limit(dtype: jnp.dtype) -> int:
    """Batches below this size resolve duplicates with float keys ``-1 .. -B`` (exact in
    ``dtype``); larger ones with a stable sort (:func:`write_leaves`)."""
    return 2 ** (jnp.finfo(dtype).nmant + 1)


def fold_rows(rows: chex.Array, op: str) -> chex.Array:
    """Left fold of ``rows`` (..., ARITY) along its last axis, column by column."""
    combine = _COMBINE[op]
    out = rows[..., 0]
    for j in range(1, rows.shape[-1]):
        out = combine(out, rows[..., j])
    return out


def _leaf_folds(rows: chex.Array, kind: str) -> list[chex.Array]:
    """Each reduction of ``kind`` over rows of leaves (an empty ``"sum+min"`` leaf, 0, does
    not count in the minimum)."""
    out = []
    for op in KINDS[kind]:
        x = jnp.where(rows > 0, rows, jnp.inf) if (op == "min" and kind == "sum+min") else rows
        out.append(fold_rows(x, op))
    return out


def _block(values: list[chex.Array], rows: int, kind: str) -> chex.Array:
    """A level's ``[..., rows, K * ARITY]`` block from each reduction's node values (...,
    n <= rows * ARITY), padded with the identities."""
    parts = []
    for v, op in zip(values, KINDS[kind], strict=True):
        pad = [(0, 0)] * (v.ndim - 1) + [(0, rows * ARITY - v.shape[-1])]
        v = jnp.pad(v, pad, constant_values=IDENTITY[op])
        parts.append(v.reshape(*v.shape[:-1], rows, ARITY))
    return jnp.concatenate(parts, axis=-1)


def build(leaves: chex.Array, *, capacity: int, kind: str) -> tuple[chex.Array, ...]:
    """``(leaves, bottom, upper)`` of the tree over ``leaves`` (``[..., capacity]``, any
    leading batch axes), each node the left fold of its children: the values any sequence of
    :func:`set_leaves` calls ending in these leaves gives, bit for bit. ``O(capacity)``."""
    c = level_counts(capacity)
    bound = ARITY * c[-2]
    pad = [(0, 0)] * (leaves.ndim - 1) + [(0, bound - leaves.shape[-1])]
    leaves = jnp.pad(leaves, pad, constant_values=EMPTY_LEAF[kind])
    values = _leaf_folds(leaves.reshape(*leaves.shape[:-1], -1, ARITY), kind)
    blocks = []
    for d in range(len(c) - 2, -1, -1):  # node values of level d, stored in c[d - 1] rows
        rows = c[d - 1] if d else 1
        block = _block(values, rows, kind)
        blocks.append(block)
        values = [
            fold_rows(block[..., k * ARITY : (k + 1) * ARITY], op)
            for k, op in enumerate(KINDS[kind])
        ]
    return leaves, blocks[0], jnp.concatenate(blocks[:0:-1], axis=-2)


def fresh(capacity: int, kind: str, dtype: jnp.dtype) -> tuple[chex.Array, ...]:
    """``(leaves, bottom, upper)`` of an empty tree."""
    return build(jnp.full((capacity,), EMPTY_LEAF[kind], dtype), capacity=capacity, kind=kind)


def write_leaves(
    leaves: chex.Array, target: chex.Array, leaf: chex.Array, vals: chex.Array
) -> tuple[chex.Array, chex.Array]:
    """``leaves[target[j]] = vals[j]``, the last occurrence of a duplicate winning, targets
    ``>= len(leaves)`` dropped; also returns each entry's row of ``ARITY`` final leaves
    (the row of ``leaf[j]``, ``target[j]`` clamped into range). The only place duplicates
    are resolved.

    Below :func:`exact_key_limit` entries (float32: 2**24) no sort: entry ``j`` writes the
    key ``-(j + 1)`` to its slot with an order-free ``min`` scatter; leaves are ``>= 0``, so
    a touched slot ends with the smallest key, that of its last occurrence, and entry ``j``
    wins where its slot holds its key. A slot holding the key of entry ``j`` is about to
    hold ``vals[j]``, which gives the rows' final values without reading the leaves again.
    From the limit on (the keys would no longer be exact) a stable sort of the targets marks
    each last occurrence, and the rows are read after the write.
    """
    n, b = leaves.shape[0], target.shape[0]
    node = leaf // ARITY
    if b < exact_key_limit(leaves.dtype):
        key = -(jnp.arange(b, dtype=leaves.dtype) + 1)
        scratch = leaves.at[target].min(key, mode="drop")
        rows = scratch.reshape(-1, ARITY)[node]
        own = jnp.take_along_axis(rows, (leaf % ARITY)[:, None], axis=1)[:, 0]
        win = (target < n) & (own == key)
        writer = jnp.clip((-rows - 1).astype(jnp.int32), 0, b - 1)
        rows = jnp.where(rows < 0, vals[writer], rows)
        return scratch.at[jnp.where(win, target, n)].set(vals, mode="drop"), rows
    order = jnp.argsort(target, stable=True)
    s = target[order]
    last = jnp.concatenate([s[1:] != s[:-1], jnp.ones((1,), bool)])
    win = jnp.zeros((b,), bool).at[order].set(last) & (target < n)
    leaves = leaves.at[jnp.where(win, target, n)].set(vals, mode="drop")
    return leaves, leaves.reshape(-1, ARITY)[node]


def set_leaves(
    leaves: chex.Array,
    bottom: chex.Array,
    upper: chex.Array,
    idx: chex.Array,
    vals: chex.Array,
    *,
    capacity: int,
    kind: str,
) -> tuple[chex.Array, chex.Array, chex.Array]:
    """Write ``vals`` (B,) to leaves ``idx`` (int32[B]) and recompute every ancestor.

    Last occurrence wins, indices outside ``[0, capacity)`` are dropped (:func:`write_leaves`).
    Then, per level, each entry's row of children is folded into every reduction of its
    parent, written in one ``K * B`` scatter. No step depends on ``capacity``: ``O(B log N)``.
    """
    ops = KINDS[kind]
    width = len(ops) * ARITY
    n = leaves.shape[0]
    off = row_offsets(capacity)
    # Out-of-range entries target ``n`` (dropped), or ``n + 1`` if the root is NaN: a data
    # dependence on the root orders these writes after every read of a previous update
    # (the root is written last), so XLA updates the leaves in place.
    after_root = n + (upper[0, 0] != upper[0, 0]).astype(idx.dtype)
    target = jnp.where((idx >= 0) & (idx < capacity), idx, after_root)
    # An out-of-range entry walks up from a clamped leaf, whose ancestors are recomputed to
    # the values they already hold. Parents listed twice get identical values.
    leaf = jnp.clip(idx, 0, capacity - 1)
    leaves, rows = write_leaves(leaves, target, leaf, vals)
    values = _leaf_folds(rows, kind)
    node = leaf // ARITY
    blocks = [bottom.reshape(-1), upper.reshape(-1)]
    for d in range(len(off) - 1, -1, -1):
        which, first = (0, 0) if d == len(off) - 1 else (1, off[d])
        row = first + node // ARITY
        col = node % ARITY
        pos = jnp.concatenate([row * width + k * ARITY + col for k in range(len(ops))])
        blocks[which] = blocks[which].at[pos].set(jnp.concatenate(values))
        if d == 0:
            break
        node = node // ARITY
        parent = blocks[which].reshape(-1, width)[row]
        values = [fold_rows(parent[:, k * ARITY : (k + 1) * ARITY], op) for k, op in enumerate(ops)]
    return leaves, blocks[0].reshape(bottom.shape), blocks[1].reshape(upper.shape)


def reduce_range(
    leaves: chex.Array,
    bottom: chex.Array,
    upper: chex.Array,
    start: chex.Array,
    end: chex.Array,
    *,
    capacity: int,
    kind: str,
    op: str,
) -> chex.Array:
    """Reduction ``op`` of the leaves ``[start, end)`` (int32 arrays of one shape, already
    clamped to ``[0, capacity]``); the identity where ``start >= end``.

    Leaves up: at each level the range ``[l, r)`` of whole nodes contributes the part of
    row ``l // ARITY`` from column ``l % ARITY`` and the part of row ``r // ARITY`` before
    column ``r % ARITY`` (one part if both are one row, which ends the walk), and continues
    as ``[l // ARITY + 1, r // ARITY)`` one level up. Two row reads per level:
    ``O(ARITY log N)`` per query.
    """
    k = KINDS[kind].index(op)
    combine, ident = _COMBINE[op], IDENTITY[op]
    empty_zero = op == "min" and kind == "sum+min"  # an empty leaf (0) is skipped
    off = row_offsets(capacity)
    shape = start.shape
    lo, hi = start.reshape(-1), end.reshape(-1)
    acc = jnp.full(lo.shape, ident, leaves.dtype)
    done = lo >= hi
    cols = jnp.arange(ARITY)
    # (array, first row, rows) of each level from the leaves up; rows are gathered from the
    # whole array (a slice per level would be copied: O(N) instead of O(log N))
    sources = [(leaves.reshape(-1, ARITY), 0, leaves.shape[0] // ARITY)]
    sources.append((bottom, 0, bottom.shape[0]))
    for d in range(len(off) - 2, 0, -1):
        sources.append((upper, off[d], off[d + 1] - off[d]))
    for level, (array, first, count) in enumerate(sources):
        width = 0 if level == 0 else k * ARITY

        def row(i, array=array, first=first, count=count, width=width, level=level):
            x = array[first + jnp.minimum(i, count - 1)][:, width : width + ARITY]
            return jnp.where(x > 0, x, jnp.inf) if level == 0 and empty_zero else x

        row_lo, col_lo = lo // ARITY, (lo % ARITY)[:, None]
        row_hi, col_hi = hi // ARITY, (hi % ARITY)[:, None]
        same = (row_lo == row_hi)[:, None]
        live = ~done[:, None]
        left = live & (cols >= col_lo) & (~same | (cols < col_hi))
        right = live & ~same & (cols < col_hi)
        acc = combine(acc, fold_rows(jnp.where(left, row(row_lo), ident), op))
        acc = combine(acc, fold_rows(jnp.where(right, row(row_hi), ident), op))
        done = done | same[:, 0] | (row_lo + 1 >= row_hi)
        lo, hi = row_lo + 1, row_hi
    return acc.reshape(shape)


def materialize(*xs: chex.Array) -> tuple[chex.Array, ...]:
    """``xs`` (same leading size B) unchanged, computed once: written through an identity
    scatter, which XLA does not fuse into consumers, so a chain of levels is not recomputed
    by every later kernel that reads it."""
    out = []
    for x in xs:
        iota = jnp.arange(x.shape[0])
        out.append(jnp.zeros_like(x).at[iota].set(x, unique_indices=True))
    return tuple(out)


def descend_step(
    rows: chex.Array, v: chex.Array, node: chex.Array, total: chex.Array
) -> tuple[chex.Array, chex.Array, chex.Array]:
    """One level of the prefix-sum descent (the rule in :func:`find_prefix`'s docstring).

    ``rows`` float[Q, ARITY]: the children's sums of each query's current ``node`` (int32[Q],
    whose sum is ``total``); ``v`` float[Q], the remaining query. Returns ``(v, node, total)``
    one level down. Unmaterialized: for a loop body, whose carry is computed once anyway.
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


def find_prefix(
    leaves: chex.Array,
    bottom: chex.Array,
    upper: chex.Array,
    values: chex.Array,
    *,
    capacity: int,
) -> tuple[chex.Array, chex.Array]:
    """Leaf index and leaf value for each query of a tree whose reduction 0 is the sum
    (``values`` of any shape, the tree's dtype).

    At a node of total ``t`` with children folded left to right into ``acc`` (``acc[-1] =
    0``, the order of the stored sums, so the last ``acc`` is ``t``), a query ``0 < v <= t``
    goes to the child ``j`` with ``acc[j - 1] < v <= acc[j]`` (positive mass) and loses
    ``acc[j - 1]``. ``v <= 0`` is raised to ``tiny`` (reaching the first positive child);
    ``v > t`` (round-off in ``u * total``) goes to the last positive child and becomes
    ``+inf``. So a zero-mass subtree is never entered; on an empty tree the result is leaf 0
    with value 0. Returns ``(int32 indices, leaf values)`` shaped like ``values``.
    """
    shape = values.shape
    v = values.reshape(-1)
    total = jnp.broadcast_to(upper[0, 0], v.shape)
    node = jnp.zeros(v.shape, jnp.int32)
    # The levels packed in ``upper`` below the root share one loop body, whose carry is
    # computed once without the identity scatters of ``descend``: 8 kernels per pass instead
    # of 7 per unrolled level, and faster (docs/design.md, "The priority tree").
    firsts = row_offsets(capacity)[1:-1]
    if firsts:
        starts = jnp.asarray(firsts, jnp.int32)

        def level(d, carry):
            v, node, total = carry
            return descend_step(upper[starts[d] + node, :ARITY], v, node, total)

        v, node, total = lax.fori_loop(0, len(firsts), level, (v, node, total))
    for source in (bottom, leaves.reshape(-1, ARITY)):
        v, node, total = materialize(*descend_step(source[node, :ARITY], v, node, total))
    return node.reshape(shape), total.reshape(shape)
