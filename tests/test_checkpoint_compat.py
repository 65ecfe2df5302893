"""Checkpoints written by an earlier jaxbuf (tests/data/checkpoints_v0/) keep restoring.

The fixtures were written by tests/data/make_checkpoints_v0.py with the jaxbuf of the time:
two standalone trees and one buffer of each kind, with what a restored copy must reproduce
in ``expected.npz``. Each is restored without ``like`` (classes rebuilt from the checkpoint)
and onto a fresh ``like`` of the current layout, then read, weighed and sampled.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbuf
from jaxbuf.errors import CheckpointMismatchError

DATA = Path(__file__).resolve().parent / "data"
FIXTURES = DATA / "checkpoints_v0"


def _generator():
    spec = importlib.util.spec_from_file_location(
        "make_checkpoints_v0", DATA / "make_checkpoints_v0.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = _generator()
EXPECTED = dict(np.load(FIXTURES / "expected.npz"))
NAMES = sorted(GEN.KINDS)


def expected(name: str) -> dict[str, np.ndarray]:
    prefix = name + "/"
    return {k[len(prefix) :]: v for k, v in EXPECTED.items() if k.startswith(prefix)}


@pytest.fixture(scope="module")
def templates():
    return GEN.empty_cases()


@pytest.fixture
def fixtures(tmp_path):
    """A writable copy (orbax may create lock files) of the committed fixtures."""
    return shutil.copytree(FIXTURES, tmp_path / "checkpoints_v0")


def check(name: str, restored) -> None:
    """``restored`` reproduces every value recorded for fixture ``name``, exactly."""
    want = expected(name)
    got = GEN.expectations(restored, GEN.KINDS[name])
    assert sorted(got) == sorted(want), name
    for what in want:
        np.testing.assert_array_equal(got[what], want[what], err_msg=f"{name}: {what}")


def test_fixtures_cover_every_buffer_kind():
    assert set(NAMES) == {"sum_tree", "min_tree", "rb", "vrb", "cached", "her", "prb", "pvrb"}
    for name in NAMES:
        assert (FIXTURES / name / "1" / "buffer_meta").is_dir(), name
        assert expected(name), name
    for name in ("prb", "pvrb"):
        assert {"weight", "draws", "tree_values"} <= set(expected(name))
        weight = expected(name)["weight"]
        assert len(np.unique(weight)) > 1, "update_weight left distinct weights"
    assert expected("sum_tree")["leaves"][3] == 6.0  # the later duplicate was kept


@pytest.mark.parametrize("name", [n for n in NAMES if n != "her"])
def test_restore_without_like(name, fixtures, templates):
    restored = jaxbuf.restore(fixtures / name)
    assert type(restored) is type(templates[name])
    check(name, restored)


@pytest.mark.parametrize("name", NAMES)
def test_restore_onto_like(name, fixtures, templates):
    like = templates[name]
    restored = jaxbuf.restore(fixtures / name, like=like)
    assert jax.tree.structure(restored) == jax.tree.structure(like)
    check(name, restored)


def test_her_needs_like_for_its_reward_function(fixtures):
    with pytest.raises(CheckpointMismatchError, match="compute_reward_fn"):
        jaxbuf.restore(fixtures / "her")


@pytest.mark.parametrize("name", ["prb", "pvrb"])
def test_restored_prioritized_buffer_keeps_working(name, fixtures, templates):
    """After restoring, adds and priority updates give what the same steps give on a buffer
    rebuilt from the recorded state (tree values set directly)."""
    restored = jaxbuf.restore(fixtures / name)
    n = restored.buffer_num
    batch = GEN.rows(50, n)
    if n == 1:
        batch = jax.tree_util.tree_map(lambda x: x[0], batch)
    after = restored.add(batch)[0].update_weight(jnp.array([1, 2]), jnp.array([4.0, 0.5]))
    values = np.asarray(after.tree.values())
    assert (values > 0).sum() == len(after)
    np.testing.assert_allclose(values[[1, 2]], np.array([4.0, 0.5]) ** after.alpha, rtol=1e-6)
    assert float(after.tree.total()) == pytest.approx(values.astype(np.float64).sum(), 1e-6)
    assert float(after.tree.min()) == values[values > 0].min()
    drawn = np.asarray(after.sample_indices(jax.random.key(0), 256))
    assert (values[drawn] > 0).all()


@pytest.mark.parametrize("name", ["sum_tree", "min_tree"])
def test_restored_tree_keeps_working(name, fixtures):
    tree = jaxbuf.restore(fixtures / name)
    leaves = expected(name)["leaves"].copy()
    tree = tree.set(jnp.array([1, 19]), jnp.array([2.0, 8.0]))
    leaves[[1, 19]] = [2.0, 8.0]
    np.testing.assert_array_equal(tree.leaves(), leaves)
    if name == "sum_tree":
        assert float(tree.total()) == leaves.sum()
    else:
        assert float(tree.min()) == leaves.min()


def test_upgrade_of_a_stacked_legacy_sum_tree():
    """The legacy layout of a stack of trees (leading axis on every level) upgrades too."""
    from jaxbuf.checkpoint import migrate

    leaves = np.stack([np.arange(8.0), np.arange(8.0)[::-1] * 2]).astype(np.float32)
    legacy = {"levels": (jnp.asarray(leaves.sum(1, keepdims=True)), jnp.asarray(leaves))}
    tree = migrate.upgrade(
        "jaxbuf.prioritized.sum_tree:SumTree", {**legacy, "capacity": 5, "op": "sum"}
    )
    assert isinstance(tree, jaxbuf.SumTree) and tree.capacity == 5
    np.testing.assert_array_equal(jax.vmap(type(tree).total)(tree), leaves[:, :5].sum(1))
    np.testing.assert_array_equal(jax.vmap(lambda t: t.reduce(1, 3))(tree), leaves[:, 1:3].sum(1))
    assert migrate.upgrade("jaxbuf.prioritized.sum_tree:SumTree", {"core": None}) is None


@pytest.mark.parametrize("cls", [jaxbuf.SumTree, jaxbuf.MinTree])
def test_current_tree_layout_round_trips(cls, tmp_path):
    tree = cls.create(70).set(jnp.array([0, 9, 69]), jnp.array([1.0, 2.0, 3.0]))
    jaxbuf.save(tmp_path / "t", tree)
    for restored in (jaxbuf.restore(tmp_path / "t"), jaxbuf.restore(tmp_path / "t", like=tree)):
        assert jax.tree.structure(restored) == jax.tree.structure(tree)
        for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(tree), strict=True):
            np.testing.assert_array_equal(a, b)
    other = (jaxbuf.MinTree if cls is jaxbuf.SumTree else jaxbuf.SumTree).create(70)
    with pytest.raises(CheckpointMismatchError, match="like expects jaxbuf.prioritized.sum_tree"):
        jaxbuf.restore(tmp_path / "t", like=other)
