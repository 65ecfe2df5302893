"""The Tianshou facade (jaxbuf.compat.tianshou): tutorial flows, recorded Tianshou runs,
donation, pickling, HDF5 and batch duck typing."""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import oracle
import pytest
from helpers import assert_close

import jaxbuf
from jaxbuf._core.episodes import AddResult
from jaxbuf.compat import tianshou as ts
from jaxbuf.errors import FieldError, IndexRangeError, InputError

DATA = Path(__file__).parent / "data"


class Batch:
    """A stand-in for Tianshou's Batch: fields in ``__dict__``, nested dicts become Batches."""

    def __init__(self, **fields):
        for key, value in fields.items():
            setattr(self, key, Batch(**value) if isinstance(value, dict) else value)


class KeyedBatch:
    """The other duck type: ``keys()`` and ``__getitem__``, no Mapping base class."""

    def __init__(self, **fields):
        self._fields = fields

    def keys(self):
        return self._fields.keys()

    def __getitem__(self, key):
        return self._fields[key]


class FrozenMapping(Mapping):
    def __init__(self, data):
        self._data = dict(data)

    def __getitem__(self, key):
        return self._data[key]

    def __iter__(self):
        return iter(self._data)

    def __len__(self):
        return len(self._data)


def tutorial_step(i, done=False):
    return Batch(
        obs=i,
        act=i,
        rew=i,
        terminated=1 if done else 0,
        truncated=0,
        done=done,
        obs_next=i + 1,
        info={},
    )


# ---------------------------------------------------------------- the tutorial, ported
def test_tutorial_circular_queue_indexing_pickle_and_sample():
    buf = ts.ReplayBuffer(size=10)
    assert (buf.maxsize, len(buf)) == (10, 0)
    assert "empty" in repr(buf)
    for i in range(3):
        buf.add(tutorial_step(i))
    assert len(buf) == 3
    np.testing.assert_array_equal(buf.obs[:3], [0, 1, 2])
    for i in range(3, 13):
        buf.add(tutorial_step(i))
    assert (buf.maxsize, len(buf)) == (10, 10)
    # the three oldest transitions were overwritten in place
    np.testing.assert_array_equal(buf.obs, [10, 11, 12, 3, 4, 5, 6, 7, 8, 9])
    np.testing.assert_array_equal(buf.obs_next, np.asarray(buf.obs) + 1)
    assert "obs" in repr(buf)
    last = buf[-1]  # slot maxsize - 1, as NumPy indexing
    assert int(last.obs) == 9 and not bool(last.done)
    np.testing.assert_array_equal(buf[-3:].obs, [7, 8, 9])  # slots of arange(len)[-3:]
    np.testing.assert_array_equal(buf[:].obs, np.arange(3, 13))  # chronological
    copy = pickle.loads(pickle.dumps(buf))
    assert len(copy) == 10
    np.testing.assert_array_equal(copy.obs, buf.obs)
    batch, idx = buf.sample(batch_size=5)
    assert idx.shape == (5,) and np.all((idx >= 0) & (idx < 10))
    np.testing.assert_array_equal(batch.obs, np.asarray(buf.obs)[idx])
    # the copy carries the sampling key: it draws what the original drew after pickling
    np.testing.assert_array_equal(copy.sample(5)[1], idx)


def test_tutorial_trajectories_and_episode_navigation():
    buf = ts.ReplayBuffer(size=10)
    results = [buf.add(tutorial_step(i, done=i in (2, 7))) for i in range(13)]
    for ptr, rew, length, start in results:
        assert ptr.shape == rew.shape == length.shape == start.shape == (1,)
    ends = {2: (3.0, 3, 0), 7: (25.0, 5, 3)}  # return 0+1+2, 3+...+7; lengths; starts
    for i, (ptr, rew, length, start) in enumerate(results):
        assert ptr[0] == i % 10
        if i in ends:
            assert (rew[0], length[0], start[0]) == ends[i]
        else:
            assert rew[0] == 0 and length[0] == 0
    assert [int(r[3][0]) for r in results] == [0, 0, 0, 3, 3, 3, 3, 3, 8, 8, 8, 8, 8]
    assert int(buf[6].obs) == 6
    np.testing.assert_array_equal(buf.prev(np.arange(7)), [9, 0, 1, 3, 3, 4, 5])
    np.testing.assert_array_equal(buf.next(np.array([4, 5, 6, 7, 8, 9])), [5, 6, 7, 7, 9, 0])
    np.testing.assert_array_equal(buf.unfinished_index(), [2])
    assert buf.prev(3) == 3  # scalar in, scalar out
    chunks = list(buf.split(4, shuffle=False))
    assert [len(i) for _, i in chunks] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([b.obs for b, _ in chunks]), np.arange(3, 13))


# ---------------------------------------------------------------- recorded Tianshou runs
CORE_OPTS = ("stack_num", "ignore_obs_next", "save_only_last_obs", "sample_avail")


def facade_of(scn):
    args = dict(scn["buffer"]["args"])
    kind = scn["buffer"]["type"]
    if kind == "CachedReplayBuffer":
        main = ts.ReplayBuffer(args["main_size"])
        return ts.CachedReplayBuffer(main, args["cached_buffer_num"], args["max_episode_length"])
    return getattr(ts, kind)(**args)  # Tianshou's own constructor call, unchanged


def core_of(buf):
    state = buf.state
    return state.buffer if hasattr(state, "buffer") else state


def add_recorded(buf, op):
    single = op["call_form"] == "single"
    batch = oracle.rows_of(op, single)
    ids = op["buffer_ids"]
    if ids is not None and buf.buffer_num == 1 and not isinstance(buf, ts.CachedReplayBuffer):
        ids = [0] * len(ids)  # E12: Tianshou treats any id of a plain buffer as 0
    res = buf.add(batch, buffer_ids=ids)
    rows = 1 if single else len(batch["act"])
    assert all(isinstance(x, np.ndarray) and x.shape[0] == rows for x in res)
    return AddResult(*res)


def _per_kind(scenarios: list, count: int) -> list:
    """The first ``count`` recorded runs of each buffer kind: the facade adds no logic of its
    own per scenario (the pure buffers replay every recorded run in test_oracle_core), so a
    few per kind cover its translation layer while keeping the suite short."""
    kept: dict = {}
    for scn in scenarios:
        kept.setdefault(scn["buffer"]["type"], []).append(scn)
    return [scn for runs in kept.values() for scn in runs[:count]]


SCENARIOS = _per_kind(
    oracle.scenarios(
        "ReplayBuffer",
        "VectorReplayBuffer",
        "PrioritizedReplayBuffer",
        "PrioritizedVectorReplayBuffer",
    ),
    2,
)


@pytest.mark.parametrize("scn", SCENARIOS, ids=[s["id"] for s in SCENARIOS])
def test_recorded_tianshou_runs(scn):
    buf = facade_of(scn)
    assert buf.maxsize == scn["layout"]["maxsize"]
    prioritized = isinstance(buf, ts.PrioritizedReplayBuffer)
    checked = 0
    for n, op in enumerate(scn["ops"]):
        what = f"{scn['id']} op {n} ({op['op']})"
        kind = op["op"]
        if kind == "add":
            res = add_recorded(buf, op)
            oracle.check_add(core_of(buf), res, op, what)
            oracle.check_state(core_of(buf), op["state_after"], what)
        elif kind == "snapshot":
            if op["prev"] is None:  # E5: Tianshou raises on an empty buffer
                assert len(buf) == 0, what
                continue
            oracle.check_state(core_of(buf), op["state"], what)
            for key, rows in op["data"].items():
                assert_close(getattr(buf, key), rows, f"{what} data {key}", atol=1e-7)
            idx = np.arange(buf.maxsize)
            np.testing.assert_array_equal(buf.prev(idx), op["prev"], err_msg=what)
            np.testing.assert_array_equal(buf.next(idx), op["next"], err_msg=what)
            np.testing.assert_array_equal(buf.unfinished_index(), op["unfinished_index"])
            _, got = buf.sample(0)
            np.testing.assert_array_equal(got, op["sample_indices_0"], err_msg=what)
        elif kind == "getitem":
            got = buf[np.asarray(op["index"], np.int64)]
            for key, expected in op["output"].items():
                if key != "weight":  # E18: jaxbuf's standard PER weights
                    assert_close(got[key], expected, f"{what} {key}")
        elif kind == "get":
            got = buf.get(np.asarray(op["index"]), op["key"], stack_num=op["stack_num"])
            assert_close(got, op["output"], what)
        elif kind == "update_weight":
            buf.update_weight(np.asarray(op["index"]), np.asarray(op["new_weight"]))
        elif kind == "set_beta":
            buf.set_beta(op["beta"])
            assert float(buf.state.beta) == pytest.approx(op["beta"])
        elif kind == "sample_indices" and op["batch_size"] and op["batch_size"] > 0 and len(buf):
            got = buf.sample_indices(op["batch_size"])
            allowed = set(buf.sample_indices(0).tolist())
            assert got.shape == (op["batch_size"],) and set(got.tolist()) <= allowed, what
        else:
            continue
        checked += 1
    assert checked > 5 and (
        not prioritized or isinstance(buf.state, jaxbuf.PrioritizedReplayBuffer)
    )


CACHED = _per_kind(oracle.scenarios("CachedReplayBuffer"), 2)


@pytest.mark.parametrize("scn", CACHED, ids=[s["id"] for s in CACHED])
def test_recorded_cached_runs(scn):
    buf = facade_of(scn)
    limit = scn["buffer"]["args"]["max_episode_length"]
    adds = 0
    for op in scn["ops"]:
        if op["op"] == "add":
            res = add_recorded(buf, op)
            out = op["output"]
            np.testing.assert_array_equal(res.index, out["insertion_idx"])
            np.testing.assert_array_equal(res.episode_length, out["ep_len"])
            assert_close(res.episode_return, out["ep_return"], "ep_return")
            ids = op["buffer_ids"] or list(range(buf.buffer_num))
            running = np.asarray([op["state_after"]["subbuffers"][1 + i]["ep_len"] for i in ids])
            fresh = (running <= limit) & (np.asarray(out["ep_len"]) <= limit)  # E7 otherwise
            np.testing.assert_array_equal(
                res.episode_start[fresh], np.asarray(out["ep_start_idx"])[fresh]
            )
            adds += 1
        elif op["op"] == "snapshot" and op["prev"] is not None:
            np.testing.assert_array_equal(buf.prev(np.arange(buf.maxsize)), op["prev"])
            np.testing.assert_array_equal(buf.unfinished_index(), op["unfinished_index"])
            assert len(buf) == op["state"]["len"]
    assert adds > 3


# ---------------------------------------------------------------- donation
def test_add_donates_the_state_and_reuses_its_storage():
    buf = ts.ReplayBuffer(64, stack_num=4, ignore_obs_next=True, save_only_last_obs=True)
    frame = np.zeros((4, 8, 8), np.uint8)
    buf.add(dict(obs=frame, act=0, rew=0.0, terminated=False, truncated=False))
    old = buf.state
    pointer = old.storage["obs"].unsafe_buffer_pointer()
    for t in range(1, 5):
        buf.add(dict(obs=frame + t, act=t, rew=1.0, terminated=False, truncated=False))
    assert old.storage["obs"].is_deleted() and old.counters.is_deleted()
    assert buf.state.storage["obs"].unsafe_buffer_pointer() == pointer  # written in place
    np.testing.assert_array_equal(buf.obs[:5, 0, 0], [0, 1, 2, 3, 4])  # last frames stored
    np.testing.assert_array_equal(buf[4].obs[:, 0, 0], [1, 2, 3, 4])  # stacks rebuilt


def test_prioritized_updates_donate_too():
    buf = ts.PrioritizedReplayBuffer(8, alpha=0.6, beta=0.4)
    for i in range(4):
        buf.add(dict(obs=np.float32(i), act=i, rew=1.0, terminated=i == 3, truncated=False))
    old = buf.state
    buf.update_weight(np.array([0, 1]), np.array([2.0, 0.5]))
    assert old.tree.leaves.is_deleted() and old.max_prio.is_deleted()
    assert float(buf.state.max_prio) == pytest.approx(2.0 + 2**-23)
    w = buf.get_weight(np.arange(4))
    assert w.shape == (4,) and np.all((w > 0) & (w <= 1)) and w[1] == pytest.approx(1.0)
    batch, idx = buf.sample(16)
    assert batch.weight.shape == (16,) and set(idx.tolist()) <= {0, 1, 2, 3}
    buf.set_beta(0.9)
    assert float(buf.state.beta) == pytest.approx(0.9)
    with pytest.raises(InputError, match="hold no transition"):
        buf.update_weight(np.array([6]), np.array([1.0]))
    with pytest.raises(IndexRangeError):
        buf.update_weight(np.array([8]), np.array([1.0]))
    assert not hasattr(ts.ReplayBuffer(4), "update_weight")  # policies probe for it


# ---------------------------------------------------------------- batches, reads, errors
@pytest.mark.parametrize(
    "wrap", [dict, FrozenMapping, lambda d: Batch(**d), lambda d: KeyedBatch(**d)]
)
def test_batch_duck_typing(wrap):
    buf = ts.VectorReplayBuffer(8, 2)
    info = wrap({"x": np.array([1.0, 2.0])})
    rows = dict(
        obs=np.zeros((2, 3)), act=np.array([1, 2]), rew=np.array([0.5, 1.0]),
        terminated=np.array([0, 1]), truncated=np.array([False, False]),
        obs_next=np.ones((2, 3)), info=info,
    )  # fmt: skip
    ptr, rew, length, start = buf.add(wrap(rows))
    np.testing.assert_array_equal(ptr, [0, 4])
    np.testing.assert_array_equal(length, [0, 1])
    assert rew[1] == pytest.approx(1.0)
    got = buf[np.array([0, 4])]
    np.testing.assert_array_equal(got.info.x, [1.0, 2.0])
    np.testing.assert_array_equal(got.done, [False, True])
    np.testing.assert_array_equal(buf.info["x"][[0, 4]], [1.0, 2.0])


def test_reads_samples_and_errors():
    buf = ts.VectorReplayBuffer(8, 2, seed=3)
    with pytest.raises(AttributeError, match="first add"):
        _ = buf.obs
    with pytest.raises(InputError, match="nothing added"):
        buf.sample(2)
    for t in range(3):
        buf.add(dict(obs=np.full(2, t, np.float32), act=[t, t], rew=[1.0, 2.0],
                     terminated=[False, t == 2], truncated=[False, False]))  # fmt: skip
    np.testing.assert_array_equal(buf.done, [0, 0, 0, 0, 0, 0, 1, 0])
    _, idx = buf.sample(0)
    np.testing.assert_array_equal(idx, [0, 1, 2, 4, 5, 6])
    assert buf.sample(-1)[1].size == 0
    np.testing.assert_array_equal(buf.sample(None)[1], idx)  # a vector buffer's None: all
    same = ts.VectorReplayBuffer(8, 2, seed=3)
    for t in range(3):
        same.add(buf[np.array([t, 4 + t])])  # a read adds back as a batch
    np.testing.assert_array_equal(same.sample(7)[1], buf.sample(7)[1])
    assert buf.get(np.array([0]), "policy", default_value=-1) == -1
    with pytest.raises(FieldError):
        buf.get(np.array([0]), "policy")
    with pytest.raises(AttributeError, match="fields are"):
        _ = buf.nonexistent
    with pytest.raises(IndexRangeError):
        buf[8]
    with pytest.raises(IndexRangeError, match="buffer_ids"):
        buf.add(buf[np.array([0])], buffer_ids=[2])
    with pytest.raises(InputError, match="0/1"):
        buf.add(dict(buf[np.array([0, 4])], terminated=np.array([2, 0])))
    with pytest.raises(InputError, match="unexpected keyword"):
        ts.ReplayBuffer(4, bogus=1)
    with pytest.raises(InputError, match="Batch"):
        buf.add(3)


def test_update_reset_and_from_state():
    src = ts.ReplayBuffer(6)
    for t in range(8):
        src.add(dict(obs=np.float32(t), act=t, rew=1.0, terminated=t % 3 == 2, truncated=False))
    dst = ts.ReplayBuffer(4)
    written = dst.update(src)
    np.testing.assert_array_equal(written, [0, 1, 2, 3, 0, 1])
    np.testing.assert_array_equal(dst[:].obs, [4, 5, 6, 7])  # the newest four, in order
    assert "obs_next" not in dst[:]  # the source stores none either
    dst.reset()
    assert len(dst) == 0 and dst.maxsize == 4
    ptr = dst.add(dict(obs=np.float32(9), act=0, rew=1.0, terminated=True, truncated=False))
    assert ptr[0][0] == 0 and ptr[2][0] == 1
    # keep_statistics: an episode cut by reset keeps counting (Tianshou's on-policy trainer)
    src.reset(keep_statistics=True)
    res = src.add(dict(obs=np.float32(0), act=0, rew=1.0, terminated=True, truncated=False))
    assert res[2][0] == 3 and res[1][0] == pytest.approx(3.0)  # two steps before reset
    pure = jaxbuf.VectorReplayBuffer.create(oracle.example_of(SCENARIOS[0]), 8, 2)
    wrapped = ts.ReplayBuffer.from_state(pure)
    assert type(wrapped) is ts.VectorReplayBuffer and wrapped.state is pure
    with pytest.raises(InputError, match="wraps as VectorReplayBuffer"):
        ts.PrioritizedReplayBuffer.from_state(pure)
    wrapped.reset()
    assert type(wrapped.state) is jaxbuf.ReplayBuffer and wrapped.state.buffer_num == 2


# ---------------------------------------------------------------- HER and cached
def np_reward(achieved, desired):
    return -(np.linalg.norm(achieved - desired, axis=-1) > 0.1).astype(np.float32)


def jnp_reward(achieved, desired):
    return -(jnp.linalg.norm(achieved - desired, axis=-1) > 0.1).astype(jnp.float32)


def goal_obs(t):
    return {"observation": np.float32([t]), "achieved_goal": np.float32([t, 0]),
            "desired_goal": np.float32([5, 0])}  # fmt: skip


@pytest.mark.parametrize("fn", [np_reward, jnp_reward])
def test_her_relabels_samples_with_numpy_or_jax_rewards(fn):
    buf = ts.HERReplayBuffer(16, compute_reward_fn=fn, horizon=4, future_k=4.0, seed=1)
    for t in range(12):
        done = t % 6 == 5
        after = goal_obs(t + 1)
        rew = np_reward(after["achieved_goal"], after["desired_goal"])
        buf.add(Batch(obs=goal_obs(t), act=0, rew=rew, terminated=done, truncated=False,
                      obs_next=after))  # fmt: skip
    batch, idx = buf.sample(64)
    expected = fn(batch.obs_next.achieved_goal, batch.obs.desired_goal)
    np.testing.assert_array_equal(batch.rew, expected)
    assert np.any(batch.obs.desired_goal[:, 0] != 5)  # some goals were relabelled
    np.testing.assert_array_equal(buf.obs["desired_goal"][:12, 0], 5)  # storage untouched
    copy = pickle.loads(pickle.dumps(buf))
    assert len(copy) == 12 and copy.sample(4)[0].rew.shape == (4,)


def test_cached_buffer_moves_finished_episodes_to_main():
    buf = ts.CachedReplayBuffer(ts.ReplayBuffer(10), cached_buffer_num=2, max_episode_length=4)
    assert buf.maxsize == 18
    for t in range(3):
        res = buf.add(dict(obs=np.float32([t, 10 + t]), act=[0, 0], rew=[1.0, 1.0],
                           terminated=[t == 2, False], truncated=[False, False]))  # fmt: skip
    ptr, rew, length, start = res
    np.testing.assert_array_equal(ptr, [2, 16])  # env 0's episode went to main slots 0..2
    np.testing.assert_array_equal(length, [3, 0])
    np.testing.assert_array_equal(buf.obs[:3], [0, 1, 2])
    np.testing.assert_array_equal(buf.unfinished_index(), [16])


# ---------------------------------------------------------------- persistence
@pytest.mark.parametrize("make", [
    lambda: ts.ReplayBuffer(6, stack_num=2),
    lambda: ts.VectorReplayBuffer(6, 3),
    lambda: ts.PrioritizedVectorReplayBuffer(6, 2, alpha=0.5, beta=0.3),
])  # fmt: skip
def test_hdf5_round_trip(tmp_path, make):
    buf = make()
    n = buf.buffer_num
    for t in range(5):
        buf.add(dict(obs=np.full((n, 2), t, np.float32), act=np.full(n, t), rew=np.ones(n),
                     terminated=np.full(n, t == 3), truncated=np.zeros(n, bool)),
                buffer_ids=np.arange(n))  # fmt: skip
    if isinstance(buf, ts.PrioritizedReplayBuffer):
        buf.update_weight(np.array([0, 3]), np.array([4.0, 0.25]))
    buf.save_hdf5(tmp_path / "buf.h5")
    back = type(buf).load_hdf5(tmp_path / "buf.h5")
    assert type(back) is type(buf) and len(back) == len(buf)
    for a, b in zip(jax.tree.leaves(back.state), jax.tree.leaves(buf.state)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(back.sample(5)[1], buf.sample(5)[1])  # same key
    row = dict(obs=np.full((n, 2), 9, np.float32), act=np.zeros(n, int), rew=np.ones(n),
               terminated=np.ones(n, bool), truncated=np.zeros(n, bool))  # fmt: skip
    for a, b in zip(back.add(row, np.arange(n)), buf.add(row, np.arange(n))):
        np.testing.assert_array_equal(a, b)  # counters continue alike


def test_load_hdf5_reads_tianshou_files():
    for name in ("tianshou_rb.h5", "tianshou_vrb.h5", "tianshou_prio.h5"):
        buf = ts.ReplayBuffer.load_hdf5(DATA / name)
        pure = jaxbuf.from_tianshou_hdf5(DATA / name)
        assert type(buf.state) is type(pure) and len(buf) == len(pure)
        np.testing.assert_array_equal(
            buf.prev(np.arange(buf.maxsize)), pure.prev(np.arange(buf.maxsize))
        )
        np.testing.assert_array_equal(buf.sample(0)[1], pure.chronological_indices())
