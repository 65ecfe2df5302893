"""Row-batch helpers shared by the add planners: grouping rows by id and segmented scans.

An add of ``k`` rows is defined as the rows applied one at a time in row order. The
planners compute that result without a loop over rows: rows are grouped by their buffer id
with a stable sort (so row order is kept inside a group), a group is cut into segments (the
episodes of one sub-buffer), and running values are segmented scans. Every function here
works along axis 0 of arrays with a leading axis of ``k`` rows and has a static output shape,
so it runs under ``jit`` and ``vmap``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax


def broadcast_rows(values: jax.Array, like: jax.Array) -> jax.Array:
    """``values`` with trailing unit axes added so that it broadcasts against ``like``.

    Args:
      values: shape ``[k, *a]`` (typically a bool[k] row mask).
      like: shape ``[k, *a, *b]``.
    Returns:
      ``values`` reshaped to ``[k, *a, 1, ..., 1]`` with ``like.ndim`` axes, so
      ``jnp.where(broadcast_rows(mask, x), x, y)`` selects whole rows of ``x``.
    """
    return values.reshape(values.shape + (1,) * (jnp.ndim(like) - values.ndim))


def segmented_scan(values, starts: jax.Array, combine: Callable):
    """Inclusive scan of ``combine`` along axis 0 that restarts at every ``starts`` row.

    ``out[0] = values[0]``; for ``j > 0``, ``out[j] = values[j]`` if ``starts[j]``, else
    ``combine(out[j - 1], values[j])``. Row 0 always begins a segment. ``combine`` must be
    associative (the scan is ``lax.associative_scan``, log depth) and elementwise over the
    trailing axes.

    Args:
      values: a pytree of arrays with a leading axis of ``k`` rows (any dtype ``combine``
        accepts, any trailing shape).
      starts: bool[k], rows that begin a segment.
      combine: ``(earlier, later) -> combined``, applied leaf by leaf.
    Returns:
      A pytree shaped like ``values``.
    """

    def merge(earlier, later):
        earlier_starts, earlier_values = earlier
        later_starts, later_values = later

        def leaf(left, right):
            return jnp.where(broadcast_rows(later_starts, right), right, combine(left, right))

        merged = jax.tree_util.tree_map(leaf, earlier_values, later_values)
        return earlier_starts | later_starts, merged

    return lax.associative_scan(merge, (starts, values))[1]


def segmented_sum(values, starts: jax.Array):
    """Running sum along axis 0 that restarts at every ``starts`` row.

    ``out[j] = sum(values[s_j : j + 1])`` with ``s_j`` the last start at or before ``j``
    (see :func:`segmented_scan`; same shapes and dtypes as ``values``).
    """
    return segmented_scan(values, starts, jnp.add)


def segment_first_row(starts: jax.Array) -> jax.Array:
    """int32[k]: for every row, the index of the first row of its segment.

    ``out[j] = max{i <= j : starts[i]}``, and 0 where no row up to ``j`` starts a segment
    (row 0 always begins one). ``j - out[j]`` is the number of rows of the same segment
    before row ``j``.

    Args:
      starts: bool[k], rows that begin a segment.
    """
    position = jnp.arange(starts.shape[0], dtype=jnp.int32)
    return lax.cummax(jnp.where(starts, position, 0))


def _after_previous(flags: jax.Array) -> jax.Array:
    """bool[k]: ``out[j] = flags[j - 1]`` (False for row 0)."""
    return jnp.concatenate([jnp.zeros((1,), bool), flags[:-1]])


class Grouping(NamedTuple):
    """Rows sorted by id, stably (row order is kept inside a group).

    Every field except ``order`` and ``inverse`` is in sorted order: entry ``p`` describes
    the row ``order[p]``.

    Attributes:
      order: int32[k], the row at each sorted position (``ids[order]`` is non-decreasing).
      inverse: int32[k], the sorted position of each row (``order[inverse[j]] == j``).
      sorted_ids: int32[k], ``ids[order]``.
      first: bool[k], the row is the first of its id.
      last: bool[k], the row is the last of its id.
      rank: int32[k], rows of the same id before it in row order.
    """

    order: jax.Array
    inverse: jax.Array
    sorted_ids: jax.Array
    first: jax.Array
    last: jax.Array
    rank: jax.Array

    def sort(self, values: jax.Array) -> jax.Array:
        """Per-row ``values`` (leading axis k, row order) in sorted order."""
        return values[self.order]

    def unsort(self, values: jax.Array) -> jax.Array:
        """Sorted-order ``values`` (leading axis k) back in row order."""
        return values[self.inverse]

    def starts_after(self, flags: jax.Array) -> jax.Array:
        """bool[k], sorted order: segments that begin at every group's first row and after
        every row whose ``flags`` (bool[k], row order) is set, within the same group."""
        return self.first | _after_previous(self.sort(flags))


def group_by_id(ids: jax.Array) -> Grouping:
    """Group ``k`` rows by id with a stable sort (see :class:`Grouping`).

    Args:
      ids: int[k], any values (callers map invalid ids to one out-of-range id first, which
        then forms its own group).
    """
    order = jnp.argsort(ids, stable=True).astype(jnp.int32)
    position = jnp.arange(ids.shape[0], dtype=jnp.int32)
    inverse = jnp.zeros_like(position).at[order].set(position)
    sorted_ids = ids[order].astype(jnp.int32)
    change = sorted_ids[1:] != sorted_ids[:-1]
    first = jnp.concatenate([jnp.ones((1,), bool), change])
    last = jnp.concatenate([change, jnp.ones((1,), bool)])
    rank = position - segment_first_row(first)
    return Grouping(order, inverse, sorted_ids, first, last, rank)


def group_sizes(ids: jax.Array, num_groups: int) -> jax.Array:
    """int32[num_groups]: how many of the rows have each id ``0..num_groups-1``.

    Ids outside ``[0, num_groups)`` are not counted.
    """
    return jnp.zeros((num_groups,), jnp.int32).at[_in_range(ids, num_groups)].add(1, mode="drop")


def last_row_per_group(grouping: Grouping, num_groups: int) -> jax.Array:
    """int32[num_groups]: the last row (row order) with each id ``0..num_groups-1``, -1 if none.

    Rows whose id is outside ``[0, num_groups)`` are ignored.
    """
    targets = jnp.where(grouping.last, _in_range(grouping.sorted_ids, num_groups), num_groups)
    empty = jnp.full((num_groups,), -1, jnp.int32)
    return empty.at[targets].set(grouping.order, mode="drop")


def last_occurrence(targets: jax.Array, size: int) -> jax.Array:
    """bool[k]: whether row ``j`` is the last row writing its target (last writer wins).

    ``out[j] = 0 <= targets[j] < size and targets[i] != targets[j] for every i > j``,
    computed with one ``max`` scatter of the row numbers into ``size`` slots (no sort).

    Args:
      targets: int[k], destination of each row; those outside ``[0, size)`` never win.
      size: number of destinations.
    """
    position = jnp.arange(targets.shape[0], dtype=jnp.int32)
    destination = _in_range(targets, size)
    winner = jnp.full((size,), -1, jnp.int32).at[destination].max(position, mode="drop")
    return (destination < size) & (winner[jnp.minimum(destination, size - 1)] == position)


def _in_range(ids: jax.Array, size: int) -> jax.Array:
    """int32 ``ids`` with every value outside ``[0, size)`` replaced by ``size``."""
    return jnp.where((ids >= 0) & (ids < size), ids, size).astype(jnp.int32)
