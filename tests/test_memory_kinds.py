"""The host-memory storage tier (``storage_memory_kind="pinned_host"``) and prefetch.

A host-tier buffer must give exactly the device buffer's outputs, keep its storage leaves in
pinned host memory through jitted donated adds, ``lax.scan`` and checkpoint restores, keep
counters and priorities on the device, and hand every read back in device memory.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbuf import (
    CachedReplayBuffer,
    ConfigError,
    HERReplayBuffer,
    Prefetcher,
    PrioritizedReplayBuffer,
    ReplayBuffer,
    double_buffered,
)
from jaxbuf import checkpoint as ck
from tests.helpers import transition

HOST = "pinned_host"
EX = transition((2,), obs_next=True)


def reward(achieved, desired):
    """HER reward: 0 when the goals are within 0.5, else -1 (module level: hashable)."""
    return -(jnp.abs(achieved - desired).sum(-1) > 0.5).astype(jnp.float32)


def _her_example():
    goal = np.zeros(1, np.float32)
    obs = {"observation": np.zeros(2, np.float32), "achieved_goal": goal, "desired_goal": goal}
    return {**transition(), "obs": obs, "obs_next": obs}


CASES = {
    "replay": lambda **kw: ReplayBuffer.create(EX, 14, **kw),
    "vector": lambda **kw: ReplayBuffer.create(EX, 12, buffer_num=3, stack_num=2, **kw),
    "prioritized": lambda **kw: PrioritizedReplayBuffer.create(
        EX, 12, alpha=0.6, beta=0.4, buffer_num=2, **kw
    ),
    "her": lambda **kw: HERReplayBuffer.create(_her_example(), 12, reward, 3, 4.0, **kw),
    "cached": lambda **kw: CachedReplayBuffer.create(EX, 8, 2, 4, **kw),
}

ADD = jax.jit(lambda b, r: b.add(r), donate_argnums=0)


def _rows(buf, k: int, rng: np.random.Generator) -> dict:
    """k random rows shaped like ``buf.input_spec()`` (episodes end with probability 0.3)."""

    def leaf(path, spec):
        name = jax.tree_util.keystr(path)
        shape = (k, *spec.shape)
        if spec.dtype == bool:
            p = 0.3 if "terminated" in name else 0.0
            return rng.random(shape) < p
        if jnp.issubdtype(spec.dtype, jnp.integer):
            return rng.integers(0, 5, shape).astype(spec.dtype)
        return rng.normal(size=shape).astype(spec.dtype)

    return jax.tree_util.tree_map_with_path(leaf, buf.input_spec())


def _width(buf) -> int:
    """Rows per ``add`` with ``buffer_ids=None``."""
    return getattr(buf, "cached_buffer_num", None) or buf.buffer_num


def _kinds(tree) -> set:
    return {x.sharding.memory_kind for x in jax.tree_util.tree_leaves(tree)}


def _core_buffers(buf) -> list:
    """The core ReplayBuffers inside ``buf`` (the storage holders)."""
    return [
        n
        for n in jax.tree_util.tree_leaves(buf, is_leaf=lambda n: isinstance(n, ReplayBuffer))
        if isinstance(n, ReplayBuffer)
    ]


def _check_placement(buf, where: str) -> None:
    for core in _core_buffers(buf):
        assert core.storage_memory_kind == HOST, where
        assert _kinds(core.storage) == {HOST}, f"{where}: storage {_kinds(core.storage)}"
        assert _kinds((core.counters, core.ep_return)) == {"device"}, f"{where}: counters"
    tree = getattr(buf, "tree", None)
    if tree is not None:
        assert _kinds(tree) == {"device"}, f"{where}: the priority tree left the device"


@jax.jit
def _probe(buf, key, rows):
    """Every read the tests compare, in one compiled program."""
    k1, k2 = jax.random.split(key)
    idx = jnp.arange(buf.maxsize)
    batch, indices = buf.sample(k1, 5)
    seq = buf.sample_sequences(k2, 3, 2)
    extended, result = buf.extend(rows)
    return {
        "sample": (batch, indices),
        "prev": buf.prev(idx),
        "next": buf.next(idx),
        "read": buf[idx],
        "sequences": (seq.batch, seq.indices, seq.mask),
        "extend": (extended.global_storage(), result),
        "extended": extended,
    }


def _filled(name: str, **kw):
    buf = CASES[name](**kw)
    rng = np.random.default_rng(0)
    for _ in range(9):
        buf, _ = ADD(buf, _rows(buf, _width(buf), rng))
    return buf


@pytest.mark.parametrize("name", list(CASES))
def test_host_tier_equals_device_tier(name):
    dev, host = _filled(name), _filled(name, storage_memory_kind=HOST)
    _check_placement(host, "after create and jitted donated adds")
    assert _kinds(dev.global_storage()) == {"device"}
    rows = _rows(dev, 7, np.random.default_rng(1))
    if name != "cached":
        rows["terminated"][-1] = True  # extend routes whole episodes
    out_dev = _probe(dev, jax.random.key(3), rows)
    out_host = _probe(host, jax.random.key(3), rows)
    _check_placement(out_host.pop("extended"), "after extend")
    out_dev.pop("extended")
    flat_dev, tree_dev = jax.tree_util.tree_flatten_with_path(out_dev)
    flat_host, tree_host = jax.tree_util.tree_flatten_with_path(out_host)
    assert tree_dev == tree_host
    for (path, a), (_, b) in zip(flat_dev, flat_host):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=str(path))
    # Reads come back in device memory; only global_storage (an export) stays on the host.
    for part in ("sample", "prev", "next", "read", "sequences"):
        assert _kinds(out_host[part]) == {"device"}, part
    assert _kinds(out_host["extend"][0]) == {HOST}
    np.testing.assert_array_equal(
        np.asarray(host.counters if hasattr(host, "counters") else host.lengths),
        np.asarray(dev.counters if hasattr(dev, "counters") else dev.lengths),
    )


def test_eager_add_and_sample_keep_placement():
    buf = ReplayBuffer.create(EX, 6, buffer_num=2, storage_memory_kind=HOST)
    buf, _ = buf.add(_rows(buf, 3, np.random.default_rng(0)), jnp.array([0, 1, 1]))
    _check_placement(buf, "after an eager add with buffer ids")
    batch, _ = buf.sample(jax.random.key(0), 4)
    assert _kinds(batch) == {"device"}
    back = buf.with_global_storage(jax.tree.map(np.asarray, buf.global_storage()))
    _check_placement(back, "after with_global_storage")


def test_scan_carries_the_host_storage():
    buf = ReplayBuffer.create(EX, 8, storage_memory_kind=HOST)
    steps = _rows(buf, 12, np.random.default_rng(0))

    def body(b, row):
        b, _ = b.add(row)
        return b, b.sample(jax.random.key(0), 2)[0]["obs"]

    out, obs = jax.jit(lambda b, s: jax.lax.scan(body, b, s))(buf, steps)
    _check_placement(out, "after lax.scan")
    assert _kinds(obs) == {"device"}
    np.testing.assert_array_equal(
        np.asarray(out.global_storage()["obs"]),
        np.asarray(steps["obs"])[[8, 9, 10, 11, 4, 5, 6, 7]],
    )


def test_compiled_sample_runs_the_gather_on_the_host_without_callbacks():
    buf = ReplayBuffer.create(EX, 8, storage_memory_kind=HOST)
    text = jax.jit(lambda b, k: b.sample(k, 4)).lower(buf, jax.random.key(0)).as_text()
    assert 'mhlo.memory_kind = "pinned_host"' in text
    assert '_xla_compute_type = "host"' in text
    assert "callback" not in text


@pytest.mark.parametrize("name", ["prioritized", "cached"])
def test_checkpoint_restore_puts_the_storage_back_on_the_host(name, tmp_path):
    buf = _filled(name, storage_memory_kind=HOST)
    ck.save(tmp_path / "c", buf)
    for like in (None, jax.eval_shape(lambda: buf)):
        back = ck.restore(tmp_path / "c", like=like)
        _check_placement(back, f"after restore (like={'abstract' if like is not None else None})")
        for a, b in zip(jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves(buf)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # The memory kind is placement: a device-tier like takes the checkpoint onto the device.
    onto_device = ck.restore(tmp_path / "c", like=CASES[name]())
    assert all(c.storage_memory_kind is None for c in _core_buffers(onto_device))
    assert _kinds([c.storage for c in _core_buffers(onto_device)]) == {"device"}


@pytest.mark.parametrize(
    "make",
    [
        lambda kind: ReplayBuffer.create(EX, 4, storage_memory_kind=kind),
        lambda kind: PrioritizedReplayBuffer.create(
            EX, 4, alpha=0.6, beta=0.4, storage_memory_kind=kind
        ),
        lambda kind: CachedReplayBuffer.create(EX, 4, 2, 2, storage_memory_kind=kind),
    ],
    ids=["replay", "prioritized", "cached"],
)
@pytest.mark.parametrize(
    "kind, match",
    [
        ("unpinned_host", "unpinned_host' is not supported.*'pinned_host'"),
        ("hbm", r"one of \['device', 'pinned_host'\].*offers.*unpinned_host.*got 'hbm'"),
        (3, "got 3"),
    ],
)
def test_bad_memory_kind_is_refused_at_create(make, kind, match):
    with pytest.raises(ConfigError, match=match):
        make(kind)


def test_device_is_the_default():
    assert ReplayBuffer.create(EX, 4, storage_memory_kind="device").storage_memory_kind is None
    assert _kinds(ReplayBuffer.create(EX, 4).storage) == {"device"}


def test_double_buffered_draws_from_the_state_before_the_update():
    buf = ReplayBuffer.create(EX, 8, storage_memory_kind=HOST)
    rows = _rows(buf, 3, np.random.default_rng(0))
    buf, _ = buf.extend(rows)

    def sample(b, k):
        return b.sample(k, 4)[0]

    def update(b, batch):  # adds a row, so a draw after it could see slot 3
        b, _ = b.add(jax.tree.map(lambda x: x[0], rows))
        return b, batch["obs"].sum()

    step = jax.jit(double_buffered(update, sample))
    first = sample(buf, jax.random.key(0))
    new, nxt, loss = step(buf, first, jax.random.key(1))
    np.testing.assert_allclose(float(loss), float(first["obs"].sum()), rtol=1e-6)
    expected = sample(buf, jax.random.key(1))
    np.testing.assert_array_equal(np.asarray(nxt["obs"]), np.asarray(expected["obs"]))
    assert len(new) == 4 and _kinds(nxt) == {"device"}


def test_prefetcher_returns_the_previous_draw():
    buf = ReplayBuffer.create(EX, 8, storage_memory_kind=HOST)
    buf, _ = buf.extend(_rows(buf, 5, np.random.default_rng(0)))
    calls = []

    def sample_fn(b, k):
        calls.append(k)
        return b.sample_indices(k, 3)

    pf = Prefetcher(sample_fn, jax.random.key(7))
    got = [np.asarray(pf(buf)) for _ in range(3)]
    assert pf.draws == 4 and len(calls) == 4
    want = [np.asarray(buf.sample_indices(k, 3)) for k in calls[:3]]
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    pf.reset()
    pf(buf)
    assert pf.draws == 6
