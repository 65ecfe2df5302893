"""Regenerate the Tianshou HDF5 fixtures used by tests/test_checkpoint_tianshou.py.

Run once with Tianshou 2.0.1 and h5py installed (the tests themselves need neither Tianshou
nor this script)::

    python tests/data/make_tianshou_hdf5.py

For each case it builds a Tianshou buffer, adds transitions (wrap-around, done and truncated
episodes, an unfinished episode, an episode longer than its sub-buffer), writes
``tianshou_<case>.h5`` with ``save_hdf5``, records what Tianshou reports about the saved
state, then keeps adding to the in-memory Tianshou buffer and records each add's output and
the state after it. Everything recorded goes to ``tianshou_hdf5_expected.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tianshou.data import (
    Batch,
    PrioritizedReplayBuffer,
    PrioritizedVectorReplayBuffer,
    ReplayBuffer,
    VectorReplayBuffer,
)

HERE = Path(__file__).parent


def _rows(obs, rew, term, trunc, info=None, frames=None):
    """A Batch of k transitions; ``obs`` float-like [k, 2] (or frame stacks with ``frames``)."""
    obs = np.asarray(obs, np.float32)
    k = len(obs)
    if frames is not None:
        obs = np.repeat(obs[:, None], frames, axis=1) + np.arange(frames)[None, :, None]
        obs = obs.astype(np.uint8)
    rows = {
        "obs": obs,
        "act": np.arange(k, dtype=np.int64) + 7,
        "rew": np.asarray(rew, np.float64),
        "terminated": np.asarray(term, bool),
        "truncated": np.asarray(trunc, bool),
        "obs_next": obs + 1,
    }
    if info is not None:
        rows["info"] = info
    return rows


def _single(rows: dict) -> dict:
    """The one transition of a 1-row batch, without the batch axis (Tianshou's single form)."""
    return {k: _single(v) if isinstance(v, dict) else v[0] for k, v in rows.items()}


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, Batch):
        return _jsonable(x.__dict__)
    arr = np.asarray(x)
    return {"dtype": str(arr.dtype), "value": arr.tolist()}


def _state(buf) -> dict:
    idx = np.arange(buf.maxsize)
    children = getattr(buf, "buffers", [buf])
    return {
        "len": len(buf),
        "last_index": np.asarray(buf.last_index).tolist(),
        "insertion_idx": [int(c._insertion_idx) for c in children],
        "lengths": [len(c) for c in children],
        "ep_return": [np.asarray(c._ep_return, np.float64).tolist() for c in children],
        "ep_len": [int(c._ep_len) for c in children],
        "ep_start": [int(c._ep_start_idx) for c in children],
        "prev": buf.prev(idx).tolist(),
        "next": buf.next(idx).tolist(),
        "unfinished_index": buf.unfinished_index().tolist(),
        "sample_indices_0": buf.sample_indices(0).tolist(),
        "data": {k: _jsonable(v) for k, v in buf._meta.__dict__.items()},
        "priority": _priority(buf),
    }


def _priority(buf):
    """Leaves p**alpha of the priority tree, max_prio, alpha, beta (None if not prioritized)."""
    if not hasattr(buf, "weight"):
        return None
    tree = buf.weight
    return {
        "leaves": tree._value[tree._bound : tree._bound + buf.maxsize].tolist(),
        "max_prio": float(buf._max_prio),
        "alpha": float(buf._alpha),
        "beta": float(buf._beta),
        "weight_norm": bool(buf._weight_norm),
    }


def _apply(buf, op):
    """Apply ``("add", rows, ids)`` or ``("update_weight", indices, weights)``; record it."""
    if op[0] == "update_weight":
        buf.update_weight(np.asarray(op[1]), np.asarray(op[2], np.float64))
        return {
            "op": "update_weight",
            "index": list(op[1]),
            "weight": list(op[2]),
            "state_after": _state(buf),
        }
    _, rows, ids = op
    out = buf.add(Batch(rows), buffer_ids=ids)
    return {
        "op": "add",
        "input": {k: _jsonable(v) for k, v in rows.items()},
        "buffer_ids": None if ids is None else list(ids),
        "output": {
            "index": np.asarray(out[0]).tolist(),
            "episode_return": np.asarray(out[1], np.float64).tolist(),
            "episode_length": np.asarray(out[2]).tolist(),
            "episode_start": np.asarray(out[3]).tolist(),
        },
        "state_after": _state(buf),
    }


def case_rb():
    """ReplayBuffer(6, stack_num=2): wrap-around, terminated and truncated ends, nested info."""
    buf = ReplayBuffer(6, stack_num=2)
    steps = [
        (0, 1, 0),
        (1, 0, 0),
        (2, 0, 0),
        (3, 0, 1),
        (4, 0, 0),
        (5, 0, 0),
        (6, 1, 0),
        (7, 0, 0),
        (8, 0, 0),
    ]
    for s, term, trunc in steps:
        buf.add(
            Batch(
                _single(
                    _rows(
                        [[s, -s]], [s + 0.5], [term], [trunc], info={"x": np.array([s], np.int64)}
                    )
                )
            )
        )
    more = [
        (
            "add",
            _single(_rows([[s, -s]], [s + 0.5], [term], [0], info={"x": np.array([s], np.int64)})),
            None,
        )
        for s, term in ((9, 0), (10, 1), (11, 0))
    ]
    return buf, more


def case_vrb():
    """VectorReplayBuffer(9, 3), vector rewards: duplicate ids, an over-long episode, one
    finished episode, one empty sub-buffer."""
    buf = VectorReplayBuffer(9, 3)

    def rew(k, base):
        return [[base + j, -(base + j)] for j in range(k)]

    buf.add(Batch(_rows([[0, 0], [1, 1]], rew(2, 0), [0, 0], [0, 0])), buffer_ids=[0, 1])
    buf.add(
        Batch(_rows([[2, 2], [3, 3], [4, 4]], rew(3, 2), [0, 0, 1], [0, 0, 0])),
        buffer_ids=[0, 0, 1],
    )
    buf.add(Batch(_rows([[5, 5], [6, 6]], rew(2, 5), [0, 0], [0, 0])), buffer_ids=[0, 0])
    more = [
        ("add", _rows([[7, 7], [8, 8]], rew(2, 7), [0, 1], [0, 0]), [2, 0]),
        ("add", _rows([[9, 9], [10, 10], [11, 11]], rew(3, 9), [0, 0, 1], [0, 0, 0]), [1, 2, 1]),
    ]
    return buf, more


def case_lastobs():
    """ReplayBuffer(5, stack_num=3, ignore_obs_next, save_only_last_obs, sample_avail), uint8
    frame stacks."""
    buf = ReplayBuffer(
        5, stack_num=3, ignore_obs_next=True, save_only_last_obs=True, sample_avail=True
    )
    for s, term in [(0, 0), (1, 0), (2, 1), (3, 0), (4, 0), (5, 0)]:
        buf.add(Batch(_single(_rows([[s, s + 1]], [1.0], [term], [0], frames=3))))
    more = [
        ("add", _single(_rows([[6, 7]], [1.0], [1], [0], frames=3)), None),
        ("add", _single(_rows([[8, 9]], [1.0], [0], [0], frames=3)), None),
    ]
    return buf, more


def case_prio():
    """PrioritizedReplayBuffer(5, alpha=0.6, beta=0.4): wrap-around and updated priorities."""
    buf = PrioritizedReplayBuffer(5, alpha=0.6, beta=0.4)
    for s in range(7):
        buf.add(Batch(_single(_rows([[s, s]], [1.0], [s == 3], [0]))))
        if s == 4:
            buf.update_weight(np.array([1, 4, 4]), np.array([-2.0, 0.5, 3.0]))
    more = [
        ("update_weight", [0, 2], [0.0, 7.5]),
        ("add", _single(_rows([[7, 7]], [1.0], [0], [0])), None),
    ]
    return buf, more


def case_pvrb():
    """PrioritizedVectorReplayBuffer(6, 2, alpha=0.5, beta=0.3): a finished episode, updates."""
    buf = PrioritizedVectorReplayBuffer(6, 2, alpha=0.5, beta=0.3)
    for s in range(4):
        buf.add(Batch(_rows([[s, s], [s, -s]], [1.0, 2.0], [0, s == 1], [0, 0])), buffer_ids=[0, 1])
    buf.update_weight(np.array([0, 4]), np.array([4.0, 0.25]))
    more = [("add", _rows([[9, 9]], [1.0], [1], [0]), [1]), ("update_weight", [1, 3], [9.0, 0.1])]
    return buf, more


CASES = (
    ("rb", case_rb),
    ("vrb", case_vrb),
    ("lastobs", case_lastobs),
    ("prio", case_prio),
    ("pvrb", case_pvrb),
)


def main() -> None:
    expected = {}
    for name, make in CASES:
        buf, more = make()
        buf.save_hdf5(str(HERE / f"tianshou_{name}.h5"))
        record = {"saved": _state(buf), "continue": [_apply(buf, op) for op in more]}
        expected[name] = record
    with open(HERE / "tianshou_hdf5_expected.json", "w") as f:
        json.dump(expected, f, indent=1)


if __name__ == "__main__":
    main()
