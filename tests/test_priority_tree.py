"""Tests for the combined sum/min tree ``PriorityTree`` (the ``"sum+min"`` view of the tree)."""

from __future__ import annotations

import re

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import random_updates
from hypothesis import given, settings

from jaxbuf.prioritized import PriorityTree, SumTree
from jaxbuf.prioritized._tree_kernels import ARITY, level_counts, row_offsets

SETTINGS = settings(max_examples=25, deadline=None)


def rebuild(leaves: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Reference: per internal level, root first, every node's sum and min (0 leaves as +inf)
    rebuilt with numpy as the left fold (``op.accumulate``) of its 8 children, the levels
    padded to a multiple of 8 with the identity; at least two levels below the root."""

    def pad(x: np.ndarray, identity: float) -> np.ndarray:
        return np.concatenate([x, np.full(-len(x) % ARITY, identity, np.float32)])

    s = pad(np.asarray(leaves, np.float32), 0)
    m = np.where(s > 0, s, np.inf).astype(np.float32)
    sums, mins = [], []
    while len(sums) < 2 or len(sums[-1]) > 1:
        s = np.add.accumulate(s.reshape(-1, ARITY), axis=1)[:, -1]
        m = np.minimum.accumulate(m.reshape(-1, ARITY), axis=1)[:, -1]
        sums.append(s)
        mins.append(m)
        s, m = pad(s, 0), pad(m, np.inf)
    return sums[::-1], mins[::-1]


def assert_rebuilt(tree: PriorityTree, leaves: np.ndarray) -> None:
    """Every internal sum and min of ``tree`` equals the numpy rebuild, bit for bit."""
    np.testing.assert_array_equal(np.asarray(tree.values()), leaves)
    sums, mins = rebuild(leaves)
    off = row_offsets(tree.capacity)
    upper, bottom = np.asarray(tree.upper), np.asarray(tree.bottom)
    blocks = [upper[off[d] : off[d + 1]] for d in range(len(off) - 1)] + [bottom]
    assert len(blocks) == len(sums)
    for block, s, m in zip(blocks, sums, mins, strict=True):
        np.testing.assert_array_equal(block[:, :ARITY].reshape(-1)[: len(s)], s)
        np.testing.assert_array_equal(block[:, ARITY:].reshape(-1)[: len(m)], m)


def np_prefix(leaves: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Smallest i with v <= cumsum[i], clamped to the leaves of positive mass."""
    cum = np.cumsum(leaves.astype(np.float64))
    positive = np.flatnonzero(leaves > 0)
    return np.clip(np.searchsorted(cum, v, side="left"), positive[0], positive[-1])


def test_layout():
    counts = (1, 4, 32, 256, 2048, 16384, 2**17, 2**20)
    assert level_counts(2**20) == counts
    assert row_offsets(2**20) == (0, 1, 2, 6, 38, 294, 2342)
    tree = PriorityTree.create(2**20)
    assert tree.leaves.shape == (2**20,) and tree.bottom.shape == (2**14, 2 * ARITY)
    assert tree.upper.shape == (2342, 2 * ARITY)
    assert tree.upper.nbytes < 256 * 1024  # under XLA:CPU's split threshold
    small = PriorityTree.create(5)
    assert level_counts(5) == (1, 1, 5)
    assert small.leaves.shape == (8,) and small.bottom.shape == small.upper.shape == (1, 16)
    assert float(small.total()) == 0 and float(small.min()) == np.inf


def test_hand_example_sum_min_and_clearing():
    tree = PriorityTree.create(70).set(jnp.array([0, 3, 69]), jnp.array([1.0, 2.0, 0.5]))
    assert float(tree.total()) == 3.5 and float(tree.min()) == 0.5
    tree = tree.set(jnp.array([69]), jnp.array([0.0]))  # 0 empties the slot
    assert float(tree.total()) == 3.0 and float(tree.min()) == 1.0
    np.testing.assert_array_equal(
        tree.find_prefix_sum(jnp.array([0.0, 1.0, 1.5, 9.0])), [0, 0, 3, 3]
    )
    idx, val = tree.sample(jax.random.key(0), 50)
    assert set(np.asarray(idx).tolist()) <= {0, 3}
    np.testing.assert_array_equal(val, np.where(np.asarray(idx) == 0, 1.0, 2.0))


def test_empty_tree_draws_zero():
    idx, val = PriorityTree.create(100).sample(jax.random.key(0), 4)
    np.testing.assert_array_equal(idx, 0)
    np.testing.assert_array_equal(val, 0)


@SETTINGS
@given(
    capacity=st.sampled_from([1, 5, 8, 9, 64, 65, 200, 4097]),
    batch=st.sampled_from([1, 7, 40]),
    data=st.data(),
)
def test_updates_last_wins_equal_rebuild_and_prefix_sums(capacity, batch, data):
    index = st.integers(-2, capacity + 1)  # out-of-range entries are ignored
    value = st.sampled_from([0.0, 1.0, 2.0, 0.5, 3.0, 7.0])  # exact partial sums, ties
    ops = data.draw(
        st.lists(
            st.lists(st.tuples(index, value), min_size=batch, max_size=batch),
            min_size=1,
            max_size=4,
        )
    )
    tree = PriorityTree.create(capacity)
    leaves = np.zeros(capacity, np.float32)
    for step in ops:
        idx = jnp.array([i for i, _ in step], jnp.int32)
        tree = jax.jit(PriorityTree.set_unchecked)(tree, idx, jnp.array([v for _, v in step]))
        for i, v in step:  # sequential assignment: the last duplicate wins
            if 0 <= i < capacity:
                leaves[i] = v
    assert_rebuilt(tree, leaves)
    if leaves.sum() > 0:
        q = (
            np.array(
                data.draw(
                    st.lists(st.integers(-2, 2 * int(leaves.sum()) + 2), min_size=1, max_size=30)
                ),
                np.float32,
            )
            / 2
        )
        got = np.asarray(tree.find_prefix_sum(jnp.asarray(q)))
        np.testing.assert_array_equal(got, np_prefix(leaves, q))


def test_million_updates_root_exact_and_zero_leaves_never_drawn():
    capacity = 5000  # 10^6 leaf updates below, with duplicates
    tree = random_updates(PriorityTree.create(capacity), capacity, batch=1000, steps=1000)
    leaves = np.asarray(tree.values())
    exact = leaves.astype(np.float64).sum()
    assert abs(float(tree.total()) - exact) <= 1e-6 * exact
    assert float(tree.min()) == leaves[leaves > 0].min()
    assert_rebuilt(tree, leaves)
    assert (leaves == 0).sum() > 100
    drawn, val = tree.sample(jax.random.key(1), 100_000, stratified=True)
    assert (leaves[np.asarray(drawn)] > 0).all()
    np.testing.assert_array_equal(val, leaves[np.asarray(drawn)])


def test_same_draws_as_sum_tree():
    leaves = np.random.default_rng(0).random(3000).astype(np.float32)
    leaves[::7] = 0
    tree = PriorityTree.create(3000).set(np.arange(3000), leaves)
    ref = SumTree.create(3000).set(np.arange(3000), leaves)
    assert float(tree.total()) == float(ref.total())
    for stratified in (False, True):
        got = tree.sample(jax.random.key(3), 512, stratified)[0]
        np.testing.assert_array_equal(got, ref.sample(jax.random.key(3), 512, stratified))


def test_vmap_over_trees():
    trees = jax.vmap(lambda _: PriorityTree.create(100))(jnp.arange(3))
    idx = jnp.array([[1, 2], [3, 3], [99, 0]])
    val = jnp.array([[1.0, 2.0], [4.0, 5.0], [6.0, 0.5]])
    trees = jax.vmap(PriorityTree.set_unchecked)(trees, idx, val)
    np.testing.assert_array_equal(trees.total(), [3.0, 5.0, 6.5])
    np.testing.assert_array_equal(trees.min(), [1.0, 5.0, 0.5])


def test_no_capacity_sized_step_when_donated():
    n = 2**16
    tree = PriorityTree.create(n)

    def step(tree, key):
        idx, val = tree.sample(key, 256)
        return tree.set_unchecked(idx, val + 1)

    def big_ops(hlo: str) -> list[str]:
        found = re.findall(rf"=\s*\(?[a-z0-9]+\[{n}(?:,\d+)*\]\S*\s+([a-z\-]+)\(", hlo)
        plumbing = {"parameter", "scatter", "fusion", "tuple", "get-tuple-element", "bitcast"}
        return [op for op in found if op not in plumbing]

    args = (tree, jax.random.key(0))
    assert big_ops(jax.jit(step, donate_argnums=0).lower(*args).compile().as_text()) == []
    assert big_ops(jax.jit(step).lower(*args).compile().as_text()) == ["copy"]  # can fail


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda t: t.set(jnp.array([8]), 1.0), IndexError, r"\[0, 8\).*\[8\]"),
        (lambda t: t.set(jnp.array([1]), -1.0), ValueError, ">= 0 and finite"),
        (lambda t: t.set(jnp.array([1]), jnp.inf), ValueError, ">= 0 and finite"),
        (lambda t: t.set(jnp.array([1.0]), 1.0), ValueError, "integers"),
        (lambda t: t.sample(jax.random.key(0), -1), ValueError, "batch_size"),
    ],
)
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call(PriorityTree.create(8))


@pytest.mark.parametrize("capacity", [0, 2.5, True])
def test_create_rejects_bad_capacity(capacity):
    with pytest.raises(ValueError, match="capacity"):
        PriorityTree.create(capacity)


def test_range_reductions_of_the_combined_tree_skip_empty_slots():
    from jaxbuf.prioritized.tree import Tree

    rng = np.random.default_rng(4)
    leaves = rng.integers(0, 5, 300).astype(np.float32)  # many exact zeros (empty slots)
    ptree = PriorityTree.create(300).set(np.arange(300), leaves)
    tree = Tree(ptree.leaves, ptree.bottom, ptree.upper, ptree.capacity, "sum+min")
    starts, ends = rng.integers(0, 300, 50), rng.integers(0, 301, 50)
    sums = np.asarray(tree.reduce(jnp.asarray(starts), jnp.asarray(ends), "sum"))
    mins = np.asarray(tree.reduce(jnp.asarray(starts), jnp.asarray(ends), "min"))
    for s, e, got_sum, got_min in zip(starts, ends, sums, mins):
        part = leaves[s:e]
        assert got_sum == part.sum()
        assert got_min == (part[part > 0].min() if (part > 0).any() else np.inf)
    assert float(tree.reduce(op="min")) == float(ptree.min())
