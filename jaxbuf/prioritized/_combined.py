"""Array kernels of the combined priority tree (sums and minimums over one leaf array).

Layout, for ``capacity`` leaves: ``c[D] = capacity`` and ``c[d] = ceil(c[d + 1] / WIDTH)``
down to ``c[0] = 1`` nodes per level (``D >= 1``), with ``WIDTH = 64`` children per node.

* ``leaves``: ``WIDTH * c[D - 1]`` entries (the ``bound``), ``p ** alpha`` per slot, 0 for an
  empty slot or the padding. Node ``p`` of level ``D - 1`` has the leaves
  ``p * WIDTH .. p * WIDTH + WIDTH - 1``.
* ``nodes``: float ``[R, 2 * WIDTH]``, every internal level packed into one array. Node ``q``
  of level ``d < D`` lives in row ``off[d] + q // WIDTH``, its sum in column ``q % WIDTH``
  and its minimum in column ``WIDTH + q % WIDTH``; ``off[0] = 0`` (the root alone in row 0)
  and ``off[d + 1] = off[d] + c[d - 1]`` (``c[-1] = 1``). So the children of node ``p`` of
  level ``d`` (``d + 1 < D``) are the row ``off[d + 1] + p``: their 64 sums then their 64
  minimums, one contiguous read. Unused entries hold the identities (sum 0, min ``+inf``).

A node's sum is ``fold(fold(x[0:8]), ..., fold(x[56:64]))`` with ``fold`` the left fold by
``+`` over its children (the value an 8-ary tree of the same leaves holds two levels up), its
minimum the same fold by ``min`` where an empty leaf (0) counts as ``+inf``. So an empty
tree has sum 0 and minimum ``+inf``.

Why 64 children folded as 8 x 8 (docs/prioritized.md): a step's cost on XLA:CPU is its
kernel count, plus 10-25 us for each gather whose operand exceeds 256 KB (XLA splits it over
both cores). Reading 64 children per level halves the levels of an 8-ary tree; the bottom
8-ary level is never stored (recomputed from the 64 leaves it covers), so the only operand
over 256 KB at 2**20 is ``leaves`` (the packed ``nodes`` are 134 KB): the descent and the
update read it once each.
"""

from __future__ import annotations

import chex
import jax.numpy as jnp

from jaxbuf.prioritized._kary import fold_rows, materialize

WIDTH = 64
"""Children per node, folded as ``GROUP`` groups of ``GROUP``."""
GROUP = 8


def level_counts(capacity: int) -> tuple[int, ...]:
    """``c[0] .. c[D]``: nodes in use per level, root (1) first, ``capacity`` last."""
    used = [capacity]
    while used[-1] > 1 or len(used) == 1:
        used.append(-(-used[-1] // WIDTH))
    return tuple(reversed(used))


def row_offsets(capacity: int) -> tuple[int, ...]:
    """``off[0] .. off[D]``: first row of each internal level in ``nodes`` (``off[D]`` is the
    row count ``R``)."""
    c = level_counts(capacity)
    off = [0, 1]
    for d in range(1, len(c) - 1):
        off.append(off[-1] + c[d - 1])
    return tuple(off)


def fresh(capacity: int, dtype: jnp.dtype) -> tuple[chex.Array, chex.Array]:
    """``(leaves, nodes)`` of an empty tree."""
    c = level_counts(capacity)
    rows = row_offsets(capacity)[-1]
    leaves = jnp.zeros((WIDTH * c[-2],), dtype)
    nodes = jnp.concatenate(
        [jnp.zeros((rows, WIDTH), dtype), jnp.full((rows, WIDTH), jnp.inf, dtype)], axis=1
    )
    return leaves, nodes


def _fold64(rows: chex.Array, op: str) -> chex.Array:
    """Fold of ``rows`` (B, 64) by ``op``: the fold of the 8 group folds."""
    groups = [fold_rows(rows[:, g * GROUP : (g + 1) * GROUP], op) for g in range(GROUP)]
    return fold_rows(jnp.stack(groups, axis=1), op)


def _fold_leaves(rows: chex.Array) -> tuple[chex.Array, chex.Array]:
    """``(sum, min)`` of leaf rows (B, 64), empty (0) leaves counting as ``+inf`` in the min."""
    return _fold64(rows, "sum"), _fold64(jnp.where(rows > 0, rows, jnp.inf), "min")


def set_leaves(
    leaves: chex.Array, nodes: chex.Array, idx: chex.Array, vals: chex.Array, *, capacity: int
) -> tuple[chex.Array, chex.Array]:
    """Write ``vals`` (B,) to leaves ``idx`` (int32[B]) and recompute every ancestor's sum and
    minimum from its children (never incremented, so the tree equals a rebuild bit for bit).

    The last occurrence of a duplicate index wins; indices outside ``[0, capacity)`` are
    dropped. Duplicates are resolved inside the leaf array: entry ``j`` writes the key
    ``-(j + 1)`` to its slot (``set``, then an order-free ``min`` scatter), so a slot ends
    with the key of its last occurrence; the 64-leaf row of each entry is then read once,
    each key replaced by its entry's value (a gather from ``vals``), and that row gives the
    new leaf and the bottom node's sum and minimum. Then per internal level one scatter of
    ``2B`` entries and one ``B x 128`` row gather. No step depends on ``capacity``.
    """
    n = leaves.shape[0]
    b = idx.shape[0]
    if b >= 2 ** (jnp.finfo(leaves.dtype).nmant + 1):
        raise ValueError(
            f"PriorityTree.set: at most {2 ** (jnp.finfo(leaves.dtype).nmant + 1) - 1} "
            f"indices per call in {leaves.dtype}, got {b}"
        )
    off = row_offsets(capacity)
    # Out-of-range entries target ``n`` (dropped), or ``n + 1`` if the root is NaN: a data
    # dependence on the root orders these writes after every read of a previous update
    # (the root is written last), so XLA updates the leaves in place.
    after_root = n + (nodes[0, 0] != nodes[0, 0]).astype(idx.dtype)
    target = jnp.where((idx >= 0) & (idx < capacity), idx, after_root)
    key = -(jnp.arange(b, dtype=leaves.dtype) + 1)
    scratch = leaves.at[target].set(key, mode="drop").at[target].min(key, mode="drop")
    win = (target < n) & (scratch[jnp.minimum(target, n - 1)] == key)
    leaves = scratch.at[jnp.where(win, target, n)].set(vals, mode="drop")
    node = jnp.clip(idx, 0, capacity - 1) // WIDTH
    rows = leaves.reshape(-1, WIDTH)[node]
    total, low = _fold_leaves(rows)

    flat = nodes.reshape(-1)
    for d in range(len(off) - 2, -1, -1):
        row = off[d] + node // WIDTH
        pos = jnp.concatenate(
            [row * 2 * WIDTH + node % WIDTH, row * 2 * WIDTH + WIDTH + node % WIDTH]
        )
        flat = flat.at[pos].set(jnp.concatenate([total, low]))
        if d == 0:
            break
        node = node // WIDTH
        parent = flat.reshape(-1, 2 * WIDTH)[row]
        total, low = _fold64(parent[:, :WIDTH], "sum"), _fold64(parent[:, WIDTH:], "min")
    return leaves, flat.reshape(nodes.shape)


def _choose(
    v: chex.Array, total: chex.Array, cols: list[chex.Array]
) -> tuple[chex.Array, chex.Array, chex.Array]:
    """One descent step among ``cols`` (list of B-vectors, the children's sums in order).

    At a node of total ``t`` with children folded left to right into ``acc`` (``acc[-1] =
    0``; the last ``acc`` is ``t``), a query ``0 < v <= t`` goes to the child ``j`` with
    ``acc[j - 1] < v <= acc[j]`` (positive mass) and loses ``acc[j - 1]``. ``v <= 0`` is
    raised to ``tiny`` (reaching the first positive child); ``v > t`` goes to the last
    positive child and becomes ``+inf`` (so it stays above every total below). Returns
    ``(child, v', child's sum)``; with no positive child, child 0 of sum 0.
    """
    tiny = jnp.asarray(jnp.finfo(v.dtype).tiny, v.dtype)
    zero = jnp.zeros_like(v)
    over = v > total
    v = jnp.maximum(v, tiny)
    child = last = jnp.zeros(v.shape, jnp.int32)
    before = sub = last_sub = acc = zero
    for j, x in enumerate(cols):
        nxt = x if j == 0 else acc + x
        hit = (acc < v) & (v <= nxt)
        child = jnp.where(hit, j, child)
        before = jnp.where(hit, acc, before)
        sub = jnp.where(hit, x, sub)
        last = jnp.where(x > 0, j, last)
        last_sub = jnp.where(x > 0, x, last_sub)
        acc = nxt
    return (
        jnp.where(over, last, child),
        jnp.where(over, jnp.inf, v - before),
        jnp.where(over, last_sub, sub),
    )


def find_prefix(
    leaves: chex.Array, nodes: chex.Array, values: chex.Array, *, capacity: int
) -> tuple[chex.Array, chex.Array]:
    """Leaf index and leaf value for each query (``values`` of any shape, the tree's dtype).

    Per level one row of 64 children is read; the 8 group sums (folded as the stored sums
    are, so the last group prefix is the node's total) pick a group, then its 8 children
    a child, by :func:`_choose`. A zero-mass subtree is never entered; on an empty tree the
    result is 0 with value 0. Returns ``(int32 indices, leaf values)`` shaped like
    ``values``.
    """
    shape = values.shape
    off = row_offsets(capacity)
    v = values.reshape(-1)
    total = jnp.broadcast_to(nodes[0, 0], v.shape)
    node = jnp.zeros(v.shape, jnp.int32)
    for d in range(1, len(off)):
        if d < len(off) - 1:
            rows = nodes[off[d] + node, :WIDTH]
        else:
            rows = leaves.reshape(-1, WIDTH)[node]
        (rows,) = materialize(rows)
        groups = [fold_rows(rows[:, g * GROUP : (g + 1) * GROUP], "sum") for g in range(GROUP)]
        g, v, total = materialize(*_choose(v, total, groups))
        group = jnp.take_along_axis(rows.reshape(-1, GROUP, GROUP), g[:, None, None], axis=1)
        cols = [group[:, 0, j] for j in range(GROUP)]
        j, v, total = _choose(v, total, cols)
        v, node, total = materialize(v, node * WIDTH + g * GROUP + j, total)
    return node.reshape(shape), total.reshape(shape)
