"""Tests for the standalone trees ``SumTree`` and ``MinTree`` (views of the one tree)."""

from __future__ import annotations

import re

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import oracle
import pytest
from helpers import random_updates
from hypothesis import given, settings

from jaxbuf.prioritized import MinTree, SumTree
from jaxbuf.prioritized._tree_kernels import ARITY

SETTINGS = settings(max_examples=25, deadline=None)


def rebuild(leaves: np.ndarray, op, identity: float) -> list[np.ndarray]:
    """Reference: every level of the float32 tree rebuilt bottom-up from its leaves with
    numpy, root first: each node is the sequential left fold (``op.accumulate``) of its
    ARITY children; levels other than the root are padded with ``identity``; at least two
    levels below the root."""

    def pad(x: np.ndarray) -> np.ndarray:
        return np.concatenate([x, np.full(-len(x) % ARITY, identity, np.float32)])

    out = [pad(np.asarray(leaves, np.float32))]
    while len(out[-1]) > 1 or len(out) < 3:
        folded = op.accumulate(pad(out[-1]).reshape(-1, ARITY), axis=1)[:, -1]
        out.append(folded if len(folded) == 1 and len(out) >= 2 else pad(folded))
    return out[::-1]


def assert_rebuilt(tree, leaves: np.ndarray, op, identity: float) -> None:
    """Every level of ``tree`` equals the numpy rebuild from ``leaves``, bit for bit."""
    expected = rebuild(leaves, op, identity)
    assert len(tree.levels) == len(expected)
    for got, want in zip(tree.levels, expected, strict=True):
        np.testing.assert_array_equal(np.asarray(got), want)


def np_prefix(leaves: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Reference for find_prefix_sum: smallest i with v <= cumsum[i], clamped to mass."""
    cum = np.cumsum(leaves.astype(np.float64))
    positive = np.flatnonzero(leaves > 0)
    idx = np.searchsorted(cum, v, side="left")
    return np.clip(idx, positive[0], positive[-1])


# ---------------------------------------------------------------- hand examples


def test_create_layout():
    assert ARITY == 8
    tree = SumTree.create(5)
    assert tree.bound == 8 and tree.depth == 2 and tree.capacity == 5
    # at least two levels below the root: a capacity of at most 8 gets a one-child root
    assert [x.shape for x in tree.levels] == [(1,), (8,), (8,)]
    assert all(x.dtype == jnp.float32 for x in tree.levels)
    assert float(tree.total()) == 0.0
    np.testing.assert_array_equal(tree.leaves(), np.zeros(5))
    one = SumTree.create(1)
    assert one.bound == 8 and one.depth == 2
    # 65 leaves: 9 nodes in use at depth 2 (padded to 16 entries), 2 at depth 1, the root
    big = SumTree.create(65)
    assert [x.shape for x in big.levels] == [(1,), (8,), (16,), (72,)]
    assert big.bound == 72 and big.depth == 3
    # 2**20 = 4 * 8**6 leaves: 7 levels below a root with 4 children in use
    sizes = [x.shape[0] for x in SumTree.create(2**20).levels]
    assert sizes == [1, 8] + [4 * 8**k for k in range(1, 7)]
    mt = MinTree.create(3)
    assert mt.bound == 8 and all(np.isinf(np.asarray(x)).all() for x in mt.levels)


def test_set_hand_example():
    # capacity 5: the root over 8 leaf slots, slots 5..7 are padding.
    tree = SumTree.create(5).set(jnp.array([0, 3, 4]), jnp.array([1.0, 2.0, 4.0]))
    np.testing.assert_array_equal(tree.levels[-1], [1, 0, 0, 2, 4, 0, 0, 0])
    np.testing.assert_array_equal(tree.levels[1], [7, 0, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(tree.levels[0], [7])
    assert float(tree.total()) == 7.0
    np.testing.assert_array_equal(tree.leaves(), [1, 0, 0, 2, 4])
    np.testing.assert_array_equal(tree.get(jnp.array([4, 0, 1])), [4, 1, 0])
    # overwrite: leaf 3 becomes 0.5, the root is recomputed
    tree = tree.set(3, 0.5)
    assert float(tree.total()) == 5.5
    # capacity 20: leaf 17 sits under node 2 of depth 1, which sits under the root
    deep = SumTree.create(20).set(jnp.array([0, 17, 19]), jnp.array([1.0, 2.0, 4.0]))
    np.testing.assert_array_equal(deep.levels[1], [1, 0, 6, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(deep.levels[0], [7])
    deep = deep.set(17, 0.5)
    np.testing.assert_array_equal(deep.levels[1][:3], [1, 0, 4.5])
    assert float(deep.total()) == 5.5
    # scalar index with scalar value, integer values are cast to the tree dtype
    tree = tree.set(jnp.array([1]), jnp.array([3]))
    assert tree.dtype == jnp.float32 and float(tree.total()) == 8.5


def test_set_is_pure():
    tree = SumTree.create(4)
    new = tree.set(jnp.array([1]), jnp.array([2.0]))
    assert float(tree.total()) == 0.0 and float(new.total()) == 2.0


def test_prefix_sum_hand_example():
    # leaves [1, 0, 0, 2, 4], cumsum [1, 1, 1, 3, 7]
    tree = SumTree.create(5).set(jnp.array([0, 3, 4]), jnp.array([1.0, 2.0, 4.0]))
    queries = jnp.array([0.0, 0.5, 1.0, 1.0001, 3.0, 3.5, 7.0, 7.5, -1.0])
    # ties go left (1.0 -> 0, 3.0 -> 3); 0 -> first positive leaf; beyond total -> last
    np.testing.assert_array_equal(tree.find_prefix_sum(queries), [0, 0, 0, 3, 3, 4, 4, 4, 0])
    # leading and trailing zero leaves are skipped at the extremes
    tree = SumTree.create(6).set(jnp.array([2, 3]), jnp.array([1.0, 1.0]))
    np.testing.assert_array_equal(
        tree.find_prefix_sum(jnp.array([0.0, 1.0, 1.5, 2.0, 2.5, 100.0])), [2, 2, 3, 3, 3, 3]
    )
    # scalar query keeps its shape
    assert tree.find_prefix_sum(jnp.float32(1.5)).shape == ()
    # capacity 1: the root is the leaf
    one = SumTree.create(1).set(0, 2.0)
    np.testing.assert_array_equal(one.find_prefix_sum(jnp.array([0.0, 1.0, 3.0])), [0, 0, 0])


def test_empty_tree_queries_return_zero():
    tree = SumTree.create(7)
    np.testing.assert_array_equal(tree.find_prefix_sum(jnp.array([0.0, 1.0])), [0, 0])
    np.testing.assert_array_equal(tree.sample(jax.random.key(0), 3), [0, 0, 0])


def test_min_tree_hand_example():
    tree = MinTree.create(5).set(jnp.array([0, 3, 4]), jnp.array([3.0, 2.0, 4.0]))
    assert float(tree.min()) == 2.0
    np.testing.assert_array_equal(tree.leaves(), [3, np.inf, np.inf, 2, 4])
    tree = tree.set(3, 5.0)  # the minimum can go up again after an overwrite
    assert float(tree.min()) == 3.0
    tree = tree.set(jnp.array([0]), jnp.array([np.inf]))  # +inf clears a leaf
    assert float(tree.min()) == 4.0


# ---------------------------------------------------------------- properties


@SETTINGS
@given(
    capacity=st.sampled_from([1, 2, 3, 5, 8, 13, 33]),
    data=st.data(),
)
def test_prefix_sum_matches_cumsum_searchsorted(capacity, data):
    # integer leaves make every partial sum exact in float32, so ties are meaningful
    leaves = np.array(
        data.draw(st.lists(st.integers(0, 9), min_size=capacity, max_size=capacity)),
        np.float32,
    )
    if leaves.sum() == 0:
        leaves[data.draw(st.integers(0, capacity - 1))] = 1.0
    tree = SumTree.create(capacity).set(jnp.arange(capacity), jnp.asarray(leaves))
    total = float(leaves.sum())
    assert float(tree.total()) == total
    halves = data.draw(st.lists(st.integers(-2, 2 * int(total) + 2), min_size=1, max_size=40))
    queries = np.array(halves, np.float32) / 2  # exact ties, interior points and both ends
    got = np.asarray(tree.find_prefix_sum(jnp.asarray(queries)))
    np.testing.assert_array_equal(got, np_prefix(leaves, queries))
    assert (leaves[got] > 0).all()


@SETTINGS
@given(
    capacity=st.sampled_from([1, 5, 40]),
    batch=st.sampled_from([1, 6, 12]),
    data=st.data(),
)
def test_batch_set_last_wins_and_equals_rebuild(capacity, batch, data):
    # XLA flushes subnormal floats to zero on CPU, the NumPy rebuild does not; priorities
    # are (|w| + eps) ** alpha, never subnormal, so subnormal leaves are not generated.
    value = st.floats(0, 100, width=32, allow_subnormal=False)
    pair = st.tuples(st.integers(0, capacity - 1), value)
    ops = data.draw(
        st.lists(st.lists(pair, min_size=batch, max_size=batch), min_size=1, max_size=4)
    )
    tree, mtree = SumTree.create(capacity), MinTree.create(capacity)
    leaves = np.zeros(capacity, np.float32)
    mleaves = np.full(capacity, np.inf, np.float32)
    for batch in ops:
        idx = jnp.array([i for i, _ in batch])
        val = jnp.array([v for _, v in batch], jnp.float32)
        tree, mtree = tree.set(idx, val), mtree.set(idx, val)
        for i, v in batch:  # sequential assignment: the last duplicate wins
            leaves[i] = mleaves[i] = v
    np.testing.assert_array_equal(tree.leaves(), leaves)
    np.testing.assert_array_equal(mtree.leaves(), mleaves)
    # every internal node equals the one a full rebuild computes, bit for bit
    assert_rebuilt(tree, leaves, np.add, 0)
    assert_rebuilt(mtree, mleaves, np.minimum, np.inf)


def test_duplicates_last_wins_under_jit():
    set_jit = jax.jit(lambda t, i, v: t.set(i, v))
    idx = jnp.array([2, 5, 2, 2, 5, 0])
    val = jnp.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    tree = set_jit(SumTree.create(8), idx, val)
    np.testing.assert_array_equal(tree.leaves(), [6, 0, 4, 0, 0, 5, 0, 0])
    assert float(tree.total()) == 15.0
    mtree = set_jit(MinTree.create(8), idx, val)
    assert float(mtree.min()) == 4.0


def test_sum_and_min_trees_never_share_a_treedef():
    # JAX 0.10 compares dataclass treedefs by field names and static values, not by class; a
    # jitted function's cache could then run one tree's program on the other (this test file
    # once failed that way). The reduction is static data, so the treedefs differ.
    s, m = SumTree.create(8), MinTree.create(8)
    assert jax.tree.structure(s) != jax.tree.structure(m)
    assert (s.op, m.op) == ("sum", "min")
    set_jit = jax.jit(lambda t, i, v: t.set(i, v))
    for _ in range(3):
        assert float(set_jit(s, jnp.array([1, 2]), jnp.array([2.0, 3.0])).total()) == 5.0
        assert float(set_jit(m, jnp.array([1, 2]), jnp.array([2.0, 3.0])).min()) == 2.0


def test_out_of_range_indices_are_dropped_under_jit():
    tree = jax.jit(lambda t, i, v: t.set(i, v))(
        SumTree.create(5), jnp.array([-1, 1, 5, 7, 9]), jnp.array([9.0, 1.0, 9.0, 9.0, 9.0])
    )
    assert_rebuilt(tree, np.eye(5)[1], np.add, 0)


def test_million_updates_root_matches_float64_sum():
    capacity = 3000  # 10^6 leaf updates below, with duplicates
    tree = random_updates(SumTree.create(capacity), capacity, 1000, 1000, method="set")
    leaves = np.asarray(tree.leaves())
    exact = leaves.astype(np.float64).sum()
    assert abs(float(tree.total()) - exact) <= 1e-6 * exact
    assert_rebuilt(tree, leaves, np.add, 0)
    assert (leaves == 0).sum() > 100  # zero leaves exist and must never be drawn
    drawn = np.asarray(tree.sample(jax.random.key(1), 100_000))
    assert (leaves[drawn] > 0).all()


def test_never_returns_zero_leaf_at_extremes():
    # zero leaves at both ends, in the middle and as padding (capacity 12, bound 16: two nodes of 8)
    leaves = np.array([0, 0, 3e-8, 0, 1e7, 0, 0, 2.5, 1e-30, 0, 0, 0], np.float32)
    tree = SumTree.create(12).set(jnp.arange(12), jnp.asarray(leaves))
    total = np.float32(tree.total())
    extremes = np.array(
        [
            0.0,
            -1.0,
            total,
            np.nextafter(total, np.float32(np.inf)),
            total * 1.01,
            np.inf,
            np.float32(1e7),
            np.nextafter(np.float32(1e7), np.float32(np.inf)),
        ],
        np.float32,
    )
    got = np.asarray(tree.find_prefix_sum(jnp.asarray(extremes)))
    assert (leaves[got] > 0).all(), got
    # v = total lands on leaf 7: leaf 8 (1e-30) is absorbed by rounding in the float32 sums
    np.testing.assert_array_equal(got[:6], [2, 2, 7, 8, 8, 8])
    for stratified in (False, True):
        drawn = np.asarray(tree.sample(jax.random.key(3), 50_000, stratified=stratified))
        assert (leaves[drawn] > 0).all()


# Critical values of the chi-square distribution at p = 0.999, from
# scipy.stats.chi2.ppf(0.999, df) (scipy 1.17); hard-coded so the test needs no scipy.
CHI2_999 = {9: 27.877164871256568, 15: 37.69729821835383}


@pytest.mark.parametrize("stratified", [False, True])
def test_sampling_frequencies_match_priorities_chi_square(stratified):
    rng = np.random.default_rng(0)
    leaves = np.zeros(24, np.float32)
    support = rng.choice(24, size=16, replace=False)
    leaves[support] = rng.uniform(0.05, 3.0, size=16).astype(np.float32)
    tree = SumTree.create(24).set(jnp.arange(24), jnp.asarray(leaves))
    n = 200_000
    counts = np.bincount(np.asarray(tree.sample(jax.random.key(7), n, stratified)), minlength=24)
    assert counts[leaves == 0].sum() == 0
    expected = n * leaves[support].astype(np.float64) / leaves.astype(np.float64).sum()
    stat = ((counts[support] - expected) ** 2 / expected).sum()
    assert stat < CHI2_999[len(support) - 1], stat
    if stratified:
        drawn = np.asarray(tree.sample(jax.random.key(8), 64, stratified=True))
        assert (np.diff(drawn) >= 0).all()


def test_oracle_prefix_sum_queries():
    """Every recorded prefix-sum query, on a tree rebuilt from the leaves recorded before it."""
    checked = 0
    for scenario in oracle.scenarios("PrioritizedReplayBuffer", "PrioritizedVectorReplayBuffer"):
        leaves = None
        for op in scenario["ops"]:
            if op["op"] == "prio_state":
                leaves = op["output"]["tree_leaves"]
            elif op["op"] == "prefix_sum_query":
                tree = SumTree.create(len(leaves)).set(
                    jnp.arange(len(leaves)), jnp.asarray(leaves, jnp.float32)
                )
                np.testing.assert_allclose(
                    float(tree.total()), op["values"][-1] / op["fractions"][-1], rtol=1e-6
                )
                got = tree.find_prefix_sum(jnp.asarray(op["values"], jnp.float32))
                oracle.check_prefix_sum(got, op, leaves, scenario["id"])
                checked += 1
    assert checked >= 2


# ---------------------------------------------------------------- transformations


def test_vmap_over_trees():
    trees = jax.tree.map(lambda *x: jnp.stack(x), *[SumTree.create(6)] * 3)
    idx = jnp.array([[0, 1], [2, 2], [5, 0]])
    val = jnp.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    trees = jax.jit(jax.vmap(lambda t, i, v: t.set(i, v)))(trees, idx, val)
    assert trees.levels[-1].shape == (3, 8)
    np.testing.assert_array_equal(jax.vmap(SumTree.total)(trees), [3, 4, 11])
    leaves = jax.vmap(SumTree.leaves)(trees)
    np.testing.assert_array_equal(
        leaves, [[1, 2, 0, 0, 0, 0], [0, 0, 4, 0, 0, 0], [6, 0, 0, 0, 0, 5]]
    )
    q = jnp.array([[1.0, 1.5], [0.0, 4.0], [6.0, 6.5]])
    np.testing.assert_array_equal(
        jax.vmap(SumTree.find_prefix_sum)(trees, q), [[0, 1], [2, 2], [0, 5]]
    )
    keys = jax.random.split(jax.random.key(0), 3)
    drawn = jax.vmap(lambda t, k: t.sample(k, 100))(trees, keys)
    assert drawn.shape == (3, 100)
    assert (np.take_along_axis(np.asarray(leaves), np.asarray(drawn), 1) > 0).all()


def test_vmap_over_batches_of_queries_and_values():
    tree = SumTree.create(4).set(jnp.arange(4), jnp.array([1.0, 1.0, 1.0, 1.0]))
    sets = jax.vmap(lambda v: tree.set(jnp.array([3]), v).total())(jnp.array([[0.0], [5.0]]))
    np.testing.assert_array_equal(sets, [3.0, 8.0])


def _capacity_sized_ops(hlo: str, size: int) -> list[str]:
    """Opcodes in a compiled HLO that produce an array of ``size`` elements, excluding the
    in-place scatter (and its fusion wrapper) and loop plumbing."""
    plumbing = {"parameter", "scatter", "fusion", "while", "tuple", "get-tuple-element", "bitcast"}
    found = re.findall(rf"=\s*\(?[a-z0-9]+\[{size}\]\S*\s+([a-z\-]+)\(", hlo)
    return [op for op in found if op not in plumbing]


def test_no_capacity_sized_step_when_donated():
    tree = SumTree.create(2**16)

    def step(tree, key, val):
        return tree.set(tree.sample(key, 256), val)

    args = (tree, jax.random.key(0), jnp.ones(256))
    donated = jax.jit(step, donate_argnums=0).lower(*args).compile().as_text()
    assert _capacity_sized_ops(donated, tree.bound) == []
    # the check can fail: without donation XLA must copy the leaves once
    kept = jax.jit(step).lower(*args).compile().as_text()
    assert _capacity_sized_ops(kept, tree.bound) == ["copy"]


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("capacity", [0, -3, 2.5, True, "4", None])
def test_create_rejects_bad_capacity(capacity):
    with pytest.raises(ValueError, match="capacity must be a positive int"):
        SumTree.create(capacity)
    with pytest.raises(ValueError, match="MinTree.create: capacity"):
        MinTree.create(capacity)


def test_create_rejects_non_float_dtype():
    with pytest.raises(ValueError, match="dtype must be a floating dtype, got int32"):
        SumTree.create(4, dtype=jnp.int32)


@pytest.mark.parametrize("bad", [-1.0, np.nan, np.inf])
def test_set_rejects_bad_values_eagerly(bad):
    tree = SumTree.create(4)
    with pytest.raises(ValueError, match=r"SumTree.set: values must be >= 0 and finite"):
        tree.set(jnp.array([0, 1]), jnp.array([1.0, bad]))


def test_min_tree_accepts_inf_but_not_negative():
    tree = MinTree.create(4).set(jnp.array([0]), jnp.array([np.inf]))
    assert np.isinf(float(tree.min()))
    with pytest.raises(ValueError, match=r"MinTree.set: values must be >= 0, got \[-2.0\]"):
        tree.set(jnp.array([0]), jnp.array([-2.0]))


def test_set_and_get_reject_bad_indices():
    tree = SumTree.create(4)
    with pytest.raises(IndexError, match=r"SumTree.set: indices must lie in \[0, 4\), got \[4\]"):
        tree.set(jnp.array([1, 4]), jnp.array([1.0, 1.0]))
    with pytest.raises(IndexError, match=r"got \[-1\]"):
        tree.get(jnp.array([-1]))
    with pytest.raises(ValueError, match="indices must be integers, got dtype float32"):
        tree.set(jnp.array([1.0]), jnp.array([1.0]))
    with pytest.raises(ValueError, match=r"indices must have shape \(\) or \(B,\), got \(1, 2\)"):
        tree.set(jnp.array([[0, 1]]), jnp.array([1.0, 1.0]))
    with pytest.raises(ValueError, match=r"values of shape \(3,\) do not broadcast"):
        tree.set(jnp.array([0, 1]), jnp.array([1.0, 1.0, 1.0]))


def test_sample_rejects_bad_batch_size():
    tree = SumTree.create(4).set(0, 1.0)
    with pytest.raises(ValueError, match="batch_size must be >= 0, got -1"):
        tree.sample(jax.random.key(0), -1)
    with pytest.raises(ValueError, match="batch_size must be an int"):
        tree.sample(jax.random.key(0), 2.0)
    assert tree.sample(jax.random.key(0), 0).shape == (0,)


def test_set_unchecked_ignores_out_of_range_eagerly():
    tree = SumTree.create(4).set_unchecked(jnp.array([-1, 2, 4]), jnp.array([5.0, 1.0, 5.0]))
    np.testing.assert_array_equal(tree.leaves(), [0, 0, 1, 0])
    assert float(tree.total()) == 1.0


def test_empty_update_is_identity():
    tree = SumTree.create(4).set(0, 1.0)
    same = tree.set(jnp.zeros((0,), jnp.int32), jnp.zeros((0,)))
    for a, b in zip(same.levels, tree.levels, strict=True):
        np.testing.assert_array_equal(a, b)


def test_oracle_prefix_sum_check_tolerates_only_float32_boundary_ties():
    """The replay's tolerance: a neighbour is accepted only where the query sits on a boundary."""
    tiny = [4.089, 2**-23, 2**-23, 4.089]  # the middle slots are below float32 resolution
    tie = {"values": [tiny[0] + tiny[1]], "output": [1]}  # Tianshou (float64): slot 1
    oracle.check_prefix_sum([0], tie, tiny, "tie")  # float32 cannot see slot 1's mass
    oracle.check_prefix_sum([1], tie, tiny, "tie")
    even = [1.0, 1.0, 1.0, 1.0]
    edge = {"values": [2.0], "output": [1]}  # on the boundary of slots 1 and 2
    oracle.check_prefix_sum([2], edge, even, "edge")
    for wrong in (0, 3):
        with pytest.raises(AssertionError, match=f"gave slot {wrong}"):
            oracle.check_prefix_sum([wrong], edge, even, "edge")
    inside = {"values": [1.5], "output": [1]}  # far from any boundary: exact only
    for wrong in (0, 2):
        with pytest.raises(AssertionError, match=f"gave slot {wrong}"):
            oracle.check_prefix_sum([wrong], inside, even, "inside")


# ---------------------------------------------------------------- range reduce


def np_reduce(leaves: np.ndarray, start: int, end: int | None, op) -> float:
    """Reference: Tianshou's ``reduce`` semantics on a NumPy array (end None = capacity,
    negative end from the end, empty range = identity)."""
    n = len(leaves)
    end = n if end is None else (end + n if end < 0 else end)
    part = leaves[start:end] if start < end else leaves[:0]
    if op is np.add:
        return float(part.astype(np.float64).sum())
    return float(part.min()) if part.size else np.inf


def test_reduce_hand_example():
    tree = SumTree.create(20).set(jnp.array([0, 3, 9, 17, 19]), jnp.array([1.0, 2, 4, 8, 16]))
    assert float(tree.reduce()) == 31.0  # the root
    assert float(tree.reduce(1)) == 30.0
    assert float(tree.reduce(0, 4)) == 3.0
    assert float(tree.reduce(3, 18)) == 14.0
    assert float(tree.reduce(0, -1)) == 15.0  # negative end counts from the end
    assert float(tree.reduce(end=-3)) == 7.0
    assert float(tree.reduce(5, 5)) == 0.0 and float(tree.reduce(9, 4)) == 0.0  # empty
    assert float(tree.reduce(20)) == 0.0 and float(tree.reduce(0, -20)) == 0.0
    mtree = MinTree.create(20).set(jnp.array([0, 3, 9, 17, 19]), jnp.array([5.0, 2, 4, 8, 1]))
    assert float(mtree.reduce()) == 1.0
    assert float(mtree.reduce(0, 3)) == 5.0
    assert float(mtree.reduce(4, 18)) == 4.0
    assert float(mtree.reduce(0, -1)) == 2.0
    assert np.isinf(float(mtree.reduce(10, 17))) and np.isinf(float(mtree.reduce(7, 2)))


@SETTINGS
@given(
    capacity=st.sampled_from([1, 2, 7, 8, 9, 63, 64, 65, 300, 4097]),
    data=st.data(),
)
def test_reduce_matches_numpy(capacity, data):
    # integer leaves: every partial sum is exact in float32, so sums compare exactly
    leaves = np.array(
        data.draw(st.lists(st.integers(0, 50), min_size=capacity, max_size=capacity)),
        np.float32,
    )
    mleaves = np.where(leaves == 0, np.inf, leaves).astype(np.float32)
    tree = SumTree.from_values(jnp.asarray(leaves))
    mtree = MinTree.create(capacity).set(jnp.arange(capacity), jnp.asarray(mleaves))
    pairs = data.draw(
        st.lists(
            st.tuples(st.integers(0, capacity), st.integers(-capacity, capacity) | st.none()),
            min_size=1,
            max_size=12,
        )
    )
    for start, end in pairs:
        assert float(tree.reduce(start, end)) == np_reduce(leaves, start, end, np.add)
        assert float(mtree.reduce(start, end)) == np_reduce(mleaves, start, end, np.minimum)
    # the same queries as one batch, under jit
    starts = jnp.array([s for s, _ in pairs])
    ends = jnp.array([capacity if e is None else e for _, e in pairs])
    want = [np_reduce(leaves, s, e, np.add) for s, e in pairs]
    np.testing.assert_array_equal(jax.jit(SumTree.reduce)(tree, starts, ends), want)
    want = [np_reduce(mleaves, s, e, np.minimum) for s, e in pairs]
    np.testing.assert_array_equal(jax.jit(MinTree.reduce)(mtree, starts, ends), want)


def test_reduce_float_leaves_close_to_float64():
    rng = np.random.default_rng(1)
    leaves = rng.random(5000).astype(np.float32)
    tree = SumTree.from_values(jnp.asarray(leaves))
    cum = np.concatenate([[0.0], np.cumsum(leaves.astype(np.float64))])
    starts = rng.integers(0, 5000, 200)
    ends = rng.integers(0, 5001, 200)
    got = np.asarray(jax.jit(SumTree.reduce)(tree, jnp.asarray(starts), jnp.asarray(ends)))
    want = np.where(starts < ends, cum[ends] - cum[np.minimum(starts, ends)], 0.0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-3)


def test_reduce_under_vmap_and_clamped_inside_jit():
    trees = jax.vmap(lambda v: SumTree.from_values(v))(jnp.arange(30.0).reshape(3, 10))
    got = jax.vmap(lambda t, s: t.reduce(s, -2))(trees, jnp.array([0, 4, 7]))
    np.testing.assert_array_equal(got, [sum(range(0, 8)), sum(range(14, 18)), 27.0])
    tree = SumTree.from_values(jnp.ones(10))
    clamped = jax.jit(lambda t, s, e: t.reduce(s, e))(tree, jnp.array(-5), jnp.array(99))
    assert float(clamped) == 10.0


def _largest_computed(hlo: str) -> int:
    """Elements of the largest array any instruction of a compiled HLO computes (fused ones
    included; parameters and their bitcasts excluded)."""
    found = re.findall(r"=\s*\(?[a-z0-9]+\[([0-9,]*)\]\S*\s+([a-z\-]+)\(", hlo)
    sizes = [
        int(np.prod([int(d) for d in dims.split(",") if d]))
        for dims, op in found
        if op not in ("parameter", "bitcast")
    ]
    return max(sizes)


@pytest.mark.parametrize("cls", [SumTree, MinTree])
def test_reduce_is_logarithmic_no_capacity_sized_step(cls):
    tree = cls.create(2**16)
    lowered = jax.jit(cls.reduce).lower(tree, jnp.array([3, 9]), jnp.array([60000, 17]))
    assert _largest_computed(lowered.compile().as_text()) <= 2 * ARITY  # rows of 8 per query
    # the check can fail: a dense reduction of the leaves computes capacity-sized arrays
    dense = jax.jit(lambda t: jnp.cumsum(t.leaves())[-1]).lower(tree).compile().as_text()
    assert _largest_computed(dense) >= tree.capacity


def test_reduce_rejects_bad_bounds():
    tree = SumTree.create(8)
    with pytest.raises(IndexError, match=r"SumTree.reduce: start must lie in \[0, 8\], got \[9\]"):
        tree.reduce(9)
    with pytest.raises(IndexError, match=r"SumTree.reduce: start must lie in \[0, 8\], got \[-1\]"):
        tree.reduce(-1, 4)
    with pytest.raises(IndexError, match=r"MinTree.reduce: end must lie in \[-8, 8\], got \[-9\]"):
        MinTree.create(8).reduce(0, -9)
    with pytest.raises(ValueError, match="end must be an integer, got dtype float32"):
        tree.reduce(0, 2.5)


# ---------------------------------------------------------------- large batches, from_values


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_batches_past_the_exact_key_limit_sort_and_last_wins(dtype):
    # bfloat16 / float16 keys are exact only below 256 / 2048 entries: larger batches take
    # the stable-sort path, which must give the same tree as the key path
    from jaxbuf.prioritized._tree_kernels import exact_key_limit

    limit = exact_key_limit(jnp.dtype(dtype))
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 40, limit + 37)
    val = rng.integers(0, 9, limit + 37).astype(np.float32)  # exact in both dtypes
    leaves = np.zeros(40, np.float32)
    for i, v in zip(idx, val):  # sequential assignment: the last duplicate wins
        leaves[i] = v
    big = SumTree.create(40, dtype).set(jnp.asarray(idx), jnp.asarray(val))
    np.testing.assert_array_equal(np.asarray(big.leaves(), np.float32), leaves)
    # the same writes split below the limit take the key path: the same tree, bit for bit
    small = SumTree.create(40, dtype)
    for part in np.array_split(np.arange(len(idx)), 4):
        small = small.set(jnp.asarray(idx[part]), jnp.asarray(val[part]))
    for a, b in zip(big.levels, small.levels, strict=True):
        np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))
    mtree = MinTree.create(40, dtype).set(jnp.asarray(idx), jnp.asarray(val + 1))
    assert float(mtree.min()) == float((leaves[np.unique(idx)] + 1).min())


def test_float32_batch_of_2_to_the_24_indices_last_wins():
    b = 2**24 + 3  # float32 keys are no longer exact: the sort path
    idx = jnp.arange(b, dtype=jnp.int32) % 1000
    val = (jnp.arange(b, dtype=jnp.int32) % 7).astype(jnp.float32)
    tree = SumTree.create(1000).set_unchecked(idx, val)
    last = np.arange(b - 1000, b)  # the last occurrence of every slot
    want = np.zeros(1000, np.float32)
    want[last % 1000] = last % 7
    np.testing.assert_array_equal(tree.leaves(), want)
    assert_rebuilt(tree, want, np.add, 0)


def test_from_values_equals_set_bit_for_bit():
    rng = np.random.default_rng(2)
    leaves = (rng.random(777) * 3).astype(np.float32)
    leaves[::5] = 0
    built = SumTree.from_values(jnp.asarray(leaves))
    written = SumTree.create(777).set(jnp.arange(777), jnp.asarray(leaves))
    for a, b in zip(built.levels, written.levels, strict=True):
        np.testing.assert_array_equal(a, b)
    assert_rebuilt(built, leaves, np.add, 0)
    mins = MinTree.from_values(jnp.asarray(np.where(leaves > 0, leaves, np.inf)))
    assert float(mins.min()) == leaves[leaves > 0].min()
    with pytest.raises(ValueError, match=r"SumTree.from_values: values must be >= 0 and finite"):
        SumTree.from_values(jnp.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="floating array"):
        SumTree.from_values(jnp.arange(3))
