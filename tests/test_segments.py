"""Row-grouping and segmented-scan helpers: hand-worked cases and NumPy references."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxbuf._core import episodes, segments

SETTINGS = settings(max_examples=40, deadline=None)

row_ids = st.lists(st.integers(-2, 5), min_size=1, max_size=12)
flags = st.lists(st.booleans(), min_size=1, max_size=12)


@st.composite
def values_and_starts(draw):
    k = draw(st.integers(1, 12))
    values = draw(st.lists(st.integers(-50, 50), min_size=k, max_size=k))
    starts = draw(st.lists(st.booleans(), min_size=k, max_size=k))
    return np.asarray(values, np.int32), np.asarray(starts)


def _segmented_reference(values, starts, combine):
    out = []
    for k, (value, start) in enumerate(zip(values, starts)):
        out.append(value if k == 0 or start else combine(out[-1], value))
    return np.asarray(out)


def _grouping_reference(ids):
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    seen: dict[int, int] = {}
    rank = []
    for i in sorted_ids:
        rank.append(seen.get(int(i), 0))
        seen[int(i)] = rank[-1] + 1
    first = np.asarray(rank) == 0
    last = np.append(sorted_ids[1:] != sorted_ids[:-1], True)
    return order, sorted_ids, first, last, np.asarray(rank)


# ----------------------------------------------------------------------------- broadcast


def test_broadcast_rows_adds_trailing_axes():
    mask = jnp.array([True, False])
    like = jnp.zeros((2, 3, 4))
    assert segments.broadcast_rows(mask, like).shape == (2, 1, 1)
    assert segments.broadcast_rows(mask, jnp.zeros(2)).shape == (2,)
    picked = jnp.where(segments.broadcast_rows(mask, like), jnp.ones((2, 3, 4)), like)
    np.testing.assert_array_equal(picked.sum(axis=(1, 2)), [12, 0])


@SETTINGS
@given(flags, st.lists(st.integers(1, 3), max_size=3))
def test_broadcast_rows_selects_whole_rows(mask, trailing):
    mask = np.asarray(mask)
    shape = (mask.shape[0], *trailing)
    ones, zeros = np.ones(shape), np.zeros(shape)
    got = jnp.where(segments.broadcast_rows(jnp.asarray(mask), zeros), ones, zeros)
    want = np.stack([ones[k] if m else zeros[k] for k, m in enumerate(mask)])
    np.testing.assert_array_equal(got, want)


# ----------------------------------------------------------------------------- scans


def test_segmented_sum_restarts_at_starts():
    values = jnp.array([1, 2, 3, 4, 5])
    starts = jnp.array([True, False, True, False, False])
    np.testing.assert_array_equal(segments.segmented_sum(values, starts), [1, 3, 3, 7, 12])
    # Row 0 begins a segment even when its flag is unset.
    np.testing.assert_array_equal(
        segments.segmented_sum(values, jnp.zeros(5, bool)), [1, 3, 6, 10, 15]
    )


def test_segmented_scan_takes_any_associative_op_on_a_pytree():
    starts = jnp.array([False, False, True, False, False])
    tree = {"a": jnp.array([3, 1, 4, 1, 5]), "b": jnp.arange(10.0).reshape(5, 2)}
    out = segments.segmented_scan(tree, starts, jnp.maximum)
    np.testing.assert_array_equal(out["a"], [3, 3, 4, 4, 5])
    np.testing.assert_array_equal(out["b"], tree["b"])  # non-decreasing rows
    summed = jax.jit(segments.segmented_sum)(tree["b"], starts)
    np.testing.assert_array_equal(summed, [[0, 1], [2, 4], [4, 5], [10, 12], [18, 21]])


@SETTINGS
@given(values_and_starts())
def test_segmented_scan_matches_a_loop(case):
    values, starts = case
    for combine, reference in ((jnp.add, np.add), (jnp.maximum, np.maximum)):
        got = segments.segmented_scan(jnp.asarray(values), jnp.asarray(starts), combine)
        np.testing.assert_array_equal(got, _segmented_reference(values, starts, reference))
    np.testing.assert_array_equal(
        segments.segmented_sum(jnp.asarray(values), jnp.asarray(starts)),
        _segmented_reference(values, starts, np.add),
    )


def test_segment_first_row():
    starts = jnp.array([False, False, True, False, True])
    np.testing.assert_array_equal(segments.segment_first_row(starts), [0, 0, 2, 2, 4])


@SETTINGS
@given(flags)
def test_segment_first_row_matches_a_loop(starts):
    want, current = [], 0
    for k, start in enumerate(starts):
        current = k if start else current
        want.append(current)
    got = segments.segment_first_row(jnp.asarray(starts))
    assert got.dtype == jnp.int32
    np.testing.assert_array_equal(got, want)


# ----------------------------------------------------------------------------- grouping


def test_group_by_id_hand_worked():
    grouping = segments.group_by_id(jnp.array([2, 0, 2, 1, 0]))
    np.testing.assert_array_equal(grouping.order, [1, 4, 3, 0, 2])
    np.testing.assert_array_equal(grouping.inverse, [3, 0, 4, 2, 1])
    np.testing.assert_array_equal(grouping.sorted_ids, [0, 0, 1, 2, 2])
    np.testing.assert_array_equal(grouping.first, [True, False, True, True, False])
    np.testing.assert_array_equal(grouping.last, [False, True, True, False, True])
    np.testing.assert_array_equal(grouping.rank, [0, 1, 0, 0, 1])
    np.testing.assert_array_equal(grouping.unsort(grouping.rank), [0, 0, 1, 0, 1])
    np.testing.assert_array_equal(grouping.sort(jnp.arange(5) * 10), [10, 40, 30, 0, 20])
    # Row 1 is done: its group's next row (row 4, sorted position 1) begins a segment.
    done = jnp.array([False, True, False, False, False])
    np.testing.assert_array_equal(grouping.starts_after(done), [True, True, True, True, False])


@SETTINGS
@given(row_ids, st.data())
def test_group_by_id_matches_numpy(ids, data):
    ids = np.asarray(ids, np.int32)
    grouping = segments.group_by_id(jnp.asarray(ids))
    order, sorted_ids, first, last, rank = _grouping_reference(ids)
    np.testing.assert_array_equal(grouping.order, order)
    np.testing.assert_array_equal(grouping.sorted_ids, sorted_ids)
    np.testing.assert_array_equal(grouping.first, first)
    np.testing.assert_array_equal(grouping.last, last)
    np.testing.assert_array_equal(grouping.rank, rank)
    np.testing.assert_array_equal(np.asarray(grouping.order)[grouping.inverse], np.arange(len(ids)))
    done = np.asarray(data.draw(st.lists(st.booleans(), min_size=len(ids), max_size=len(ids))))
    after_done = np.append(False, done[order][:-1]) & ~first
    np.testing.assert_array_equal(grouping.starts_after(jnp.asarray(done)), first | after_done)


def test_group_sizes_ignores_ids_out_of_range():
    sizes = segments.group_sizes(jnp.array([2, 0, 2, 1, 0, -1, 3]), 3)
    np.testing.assert_array_equal(sizes, [2, 1, 2])


@SETTINGS
@given(row_ids, st.integers(1, 6))
def test_group_sizes_matches_bincount(ids, num_groups):
    ids = np.asarray(ids)
    inside = ids[(ids >= 0) & (ids < num_groups)]
    got = segments.group_sizes(jnp.asarray(ids, jnp.int32), num_groups)
    np.testing.assert_array_equal(got, np.bincount(inside, minlength=num_groups))


def test_last_row_per_group_hand_worked():
    grouping = segments.group_by_id(jnp.array([2, 0, 2, 1, 0, 5]))
    np.testing.assert_array_equal(segments.last_row_per_group(grouping, 4), [4, 3, 2, -1])


@SETTINGS
@given(row_ids, st.integers(1, 6))
def test_last_row_per_group_matches_a_loop(ids, num_groups):
    want = np.full(num_groups, -1)
    for row, group in enumerate(ids):
        if 0 <= group < num_groups:
            want[group] = row
    grouping = segments.group_by_id(jnp.asarray(ids, jnp.int32))
    np.testing.assert_array_equal(segments.last_row_per_group(grouping, num_groups), want)


def test_last_occurrence_hand_worked():
    targets = jnp.array([1, 3, 1, 0, 3, 7, -1])
    want = [False, False, True, True, True, False, False]
    np.testing.assert_array_equal(segments.last_occurrence(targets, 4), want)


@SETTINGS
@given(row_ids, st.integers(1, 6))
def test_last_occurrence_matches_a_loop(targets, size):
    want = [
        0 <= target < size and target not in targets[row + 1 :]
        for row, target in enumerate(targets)
    ]
    got = segments.last_occurrence(jnp.asarray(targets, jnp.int32), size)
    np.testing.assert_array_equal(got, want)


# ----------------------------------------------------------------------------- counters


def test_packed_counter_columns_are_named():
    counters = episodes.Counters(
        insertion_idx=jnp.array([1, 2]),
        lengths=jnp.array([3, 4]),
        last_slot=jnp.array([5, 6]),
        ep_return=jnp.zeros(2),
        ep_len=jnp.array([7, 8]),
        ep_start=jnp.array([9, 10]),
    )
    packed, _ = episodes.pack(counters)
    np.testing.assert_array_equal(packed[:, episodes.INSERTION_IDX], [1, 2])
    np.testing.assert_array_equal(packed[:, episodes.LENGTHS], [3, 4])
    np.testing.assert_array_equal(packed[:, episodes.LAST_SLOT], [5, 6])
    np.testing.assert_array_equal(packed[:, episodes.EP_LEN], [7, 8])
    np.testing.assert_array_equal(packed[:, episodes.EP_START], [9, 10])
    back = episodes.unpack(packed, counters.ep_return)
    for name in episodes.PACKED:
        np.testing.assert_array_equal(getattr(back, name), getattr(counters, name))
