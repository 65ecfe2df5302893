"""Array kernels of the combined priority tree (sums and minimums over one leaf array).

Layout, for ``capacity`` leaves: ``c[D] = capacity`` and ``c[d] = ceil(c[d + 1] / ARITY)``
down to ``c[0] = 1`` nodes per level, with ``D >= 2`` (a capacity of at most 8 gets a root
with a single child) and ``ARITY = 8`` children per node.

* ``leaves``: float ``[ARITY * c[D - 1]]`` (the ``bound``), ``p ** alpha`` per slot, 0 for
  an empty slot and the padding. Node ``p`` of level ``D - 1`` has the leaves
  ``p * ARITY .. p * ARITY + ARITY - 1``.
* Internal node ``q`` of level ``d < D`` is stored in row ``q // ARITY`` of its level's
  ``[rows, 2 * ARITY]`` block, its sum in column ``q % ARITY`` and its minimum in column
  ``ARITY + q % ARITY``. So row ``p`` of level ``d + 1`` holds the sums then the minimums of
  the children of node ``p`` of level ``d``: one contiguous 64-byte read (float32). The root
  is row 0, column 0 (sum) and 8 (min) of level 0. Unused entries hold the identities (sum
  0, min ``+inf``).
* ``bottom``: the block of level ``D - 1`` (``[c[D - 2], 16]``); ``upper``: the blocks of
  levels ``0 .. D - 2`` stacked, level ``d`` from row ``off[d]`` (:func:`row_offsets`).

A node's sum is the left fold by ``+`` of its children (as in ``SumTree``), its minimum the
left fold by ``min`` where an empty leaf (0) counts as ``+inf``: an empty tree has sum 0 and
minimum ``+inf``.

Why (docs/prioritized.md): a step's cost on XLA:CPU is its kernel count, plus 10-25 us for
each gather whose operand exceeds 256 KB (XLA splits it over both cores) and a few ns per
gathered element. Keeping both reductions of a node in one row makes one update resolve
duplicates, write the leaves and walk the levels once for both; packing the small levels
into ``upper`` (150 KB at 2**20) keeps their gathers whole and the argument count at three.
"""

from __future__ import annotations

import chex
import jax.numpy as jnp
from jax import lax

from jaxbuf.prioritized._kary import ARITY, descend, descend_step, fold_rows


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


def fresh(capacity: int, dtype: jnp.dtype) -> tuple[chex.Array, chex.Array, chex.Array]:
    """``(leaves, bottom, upper)`` of an empty tree."""
    c = level_counts(capacity)

    def block(rows: int) -> chex.Array:
        return jnp.concatenate(
            [jnp.zeros((rows, ARITY), dtype), jnp.full((rows, ARITY), jnp.inf, dtype)], axis=1
        )

    leaves = jnp.zeros((ARITY * c[-2],), dtype)
    return leaves, block(c[-3]), block(row_offsets(capacity)[-1])


def set_leaves(
    leaves: chex.Array,
    bottom: chex.Array,
    upper: chex.Array,
    idx: chex.Array,
    vals: chex.Array,
    *,
    capacity: int,
) -> tuple[chex.Array, chex.Array, chex.Array]:
    """Write ``vals`` (B,) to leaves ``idx`` (int32[B]) and recompute every ancestor's sum and
    minimum from its children (never incremented, so the tree equals a rebuild bit for bit).

    The last occurrence of a duplicate index wins; indices outside ``[0, capacity)`` are
    dropped. Duplicates are resolved inside the leaf array: entry ``j`` writes the key
    ``-(j + 1)`` to its slot with an order-free ``min`` scatter; the leaves are ``>= 0``, so
    a touched slot ends with the smallest key, that of its last occurrence. Each entry then
    reads its row of ``ARITY`` slots once: it wins where its own slot holds its key, and a
    slot holding the key ``-(j + 1)`` is about to hold ``vals[j]``, which gives the row's
    final values without reading the leaves again. The winners' values are written and, per
    level, each entry's row of children is folded into the parent's sum and minimum and
    written in one ``2B`` scatter. No step depends on ``capacity``.
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
    after_root = n + (upper[0, 0] != upper[0, 0]).astype(idx.dtype)
    target = jnp.where((idx >= 0) & (idx < capacity), idx, after_root)
    key = -(jnp.arange(b, dtype=leaves.dtype) + 1)
    scratch = leaves.at[target].min(key, mode="drop")

    # An out-of-range entry walks up from a clamped leaf, whose ancestors are recomputed to
    # the values they already hold. Parents listed twice get identical values.
    leaf = jnp.clip(idx, 0, capacity - 1)
    node = leaf // ARITY
    rows = scratch.reshape(-1, ARITY)[node]
    own = jnp.take_along_axis(rows, (leaf % ARITY)[:, None], axis=1)[:, 0]
    win = (target < n) & (own == key)
    writer = jnp.clip((-rows - 1).astype(jnp.int32), 0, b - 1)
    rows = jnp.where(rows < 0, vals[writer], rows)
    leaves = scratch.at[jnp.where(win, target, n)].set(vals, mode="drop")
    total = fold_rows(rows, "sum")
    low = fold_rows(jnp.where(rows > 0, rows, jnp.inf), "min")
    blocks = [bottom.reshape(-1), upper.reshape(-1)]
    for d in range(len(off) - 1, -1, -1):
        which, first = (0, 0) if d == len(off) - 1 else (1, off[d])
        row = first + node // ARITY
        col = node % ARITY
        pos = jnp.concatenate([row * 2 * ARITY + col, row * 2 * ARITY + ARITY + col])
        blocks[which] = blocks[which].at[pos].set(jnp.concatenate([total, low]))
        if d == 0:
            break
        node = node // ARITY
        parent = blocks[which].reshape(-1, 2 * ARITY)[row]
        total = fold_rows(parent[:, :ARITY], "sum")
        low = fold_rows(parent[:, ARITY:], "min")
    return leaves, blocks[0].reshape(bottom.shape), blocks[1].reshape(upper.shape)


def find_prefix(
    leaves: chex.Array,
    bottom: chex.Array,
    upper: chex.Array,
    values: chex.Array,
    *,
    capacity: int,
) -> tuple[chex.Array, chex.Array]:
    """Leaf index and leaf value for each query (``values`` of any shape, the tree's dtype).

    At a node of total ``t`` with children folded left to right into ``acc`` (``acc[-1] =
    0``, the order of the stored sums, so the last ``acc`` is ``t``), a query ``0 < v <= t``
    goes to the child ``j`` with ``acc[j - 1] < v <= acc[j]`` (positive mass) and loses
    ``acc[j - 1]``. ``v <= 0`` is raised to ``tiny`` (reaching the first positive child);
    ``v > t`` (round-off in ``u * total``) goes to the last positive child and becomes
    ``+inf``. So a zero-mass subtree is never entered; on an empty tree the result is leaf 0
    with value 0. The same descent as ``SumTree.find_prefix_sum`` (equal answers for equal
    leaves). Returns ``(int32 indices, leaf values)`` shaped like ``values``.
    """
    shape = values.shape
    v = values.reshape(-1)
    total = jnp.broadcast_to(upper[0, 0], v.shape)
    node = jnp.zeros(v.shape, jnp.int32)
    # The levels packed in ``upper`` below the root share one loop body, whose carry is
    # computed once without the identity scatters of ``descend``: 8 kernels per pass instead
    # of 7 per unrolled level, and measured faster (docs/prioritized.md, "Why this layout").
    firsts = row_offsets(capacity)[1:-1]
    if firsts:
        starts = jnp.asarray(firsts, jnp.int32)

        def level(d, carry):
            v, node, total = carry
            return descend_step(upper[starts[d] + node, :ARITY], v, node, total)

        v, node, total = lax.fori_loop(0, len(firsts), level, (v, node, total))
    for source in (bottom, leaves.reshape(-1, ARITY)):
        v, node, total = descend(source[node, :ARITY], v, node, total)
    return node.reshape(shape), total.reshape(shape)
