"""Importing Tianshou ``save_hdf5`` files (fixtures made by tests/data/make_tianshou_hdf5.py).

Compared with what Tianshou 2.0.1 itself reported when the fixtures were written: data,
counters, prev/next of every slot, unfinished heads, chronological order; then further adds
on both sides (outputs and state after each). Tianshou is not needed to run these tests.
"""

from __future__ import annotations

import json
import pickle
import shutil
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from checkpoint_roundtrip import assert_bit_identical
from helpers import assert_close

import jaxbuf
import jaxbuf.checkpoint as ckpt

h5py = pytest.importorskip("h5py")

from jaxbuf.checkpoint.tianshou_hdf5 import from_tianshou_hdf5  # noqa: E402

DATA = Path(__file__).parent / "data"
with open(DATA / "tianshou_hdf5_expected.json") as _f:
    EXPECTED = json.load(_f)
CASES = sorted(EXPECTED)


def _value(x):
    """A recorded (dtype, value) pair, or a nested dict of them, as NumPy."""
    if "dtype" in x and "value" in x:
        return np.asarray(x["value"], dtype=x["dtype"])
    return {k: _value(v) for k, v in x.items()}


KINDS = {
    "rb": jaxbuf.ReplayBuffer,
    "vrb": jaxbuf.VectorReplayBuffer,
    "lastobs": jaxbuf.ReplayBuffer,
    "prio": jaxbuf.PrioritizedReplayBuffer,
    "pvrb": jaxbuf.PrioritizedVectorReplayBuffer,
}


def _check_priority(buf, prio, what):
    if prio is None:
        assert not isinstance(buf, jaxbuf.PrioritizedReplayBuffer), what
        return
    assert_close(buf.priorities(), prio["leaves"], what + " priorities")
    assert_close(buf.max_prio, prio["max_prio"], what + " max_prio")
    assert_close(buf.beta, prio["beta"], what + " beta")
    assert buf.alpha == prio["alpha"] and buf.weight_norm == prio["weight_norm"], what
    # jaxbuf's min tree holds the smallest stored leaf (p_min ** alpha).
    assert_close(buf.tree.min(), min(prio["leaves"]), what + " min tree")


def _core(buf):
    return buf.buffer if isinstance(buf, jaxbuf.PrioritizedReplayBuffer) else buf


def _check_state(buf, state, what):
    _check_priority(buf, state["priority"], what)
    buf = _core(buf)
    idx = np.arange(buf.maxsize)
    assert len(buf) == state["len"], what
    for name in ("last_index", "insertion_idx", "lengths", "ep_len", "ep_start"):
        np.testing.assert_array_equal(getattr(buf, name), state[name], err_msg=f"{what} {name}")
    for k, ret in enumerate(state["ep_return"]):
        assert_close(buf.ep_return[k], np.broadcast_to(ret, buf.ep_return.shape[1:]), what)
    np.testing.assert_array_equal(buf.prev(idx), state["prev"], err_msg=what + " prev")
    np.testing.assert_array_equal(buf.next(idx), state["next"], err_msg=what + " next")
    np.testing.assert_array_equal(
        buf.unfinished_index_compact(), state["unfinished_index"], err_msg=what
    )
    np.testing.assert_array_equal(
        buf.chronological_indices(), state["sample_indices_0"], err_msg=what
    )
    data = _value(state["data"])
    done = data.pop("done")
    stored = buf.global_storage()
    np.testing.assert_array_equal(stored["terminated"] | stored["truncated"], done)
    flat = {k: v for k, v in data.items() if not isinstance(v, dict) or v}
    assert sorted(buf.storage) == sorted(flat), what
    for key, rows in flat.items():
        for got, want in zip(_leaves(stored[key]), _leaves(rows), strict=True):
            assert_close(got, want, f"{what} data {key}")


def _leaves(x):
    if isinstance(x, dict):
        for k in sorted(x):
            yield from _leaves(x[k])
    else:
        yield np.asarray(x)


@jax.jit
def _add(buf, batch, ids):
    return buf.add(batch, ids)


def _running_lengths(buf, ids, batch) -> np.ndarray:
    """Per added row, the length its episode reaches (rows applied in order, as in add)."""
    ids = [0] if ids is None else ids
    done = np.reshape(np.asarray(batch["terminated"]) | np.asarray(batch["truncated"]), -1)
    count = np.asarray(buf.ep_len).copy()
    out = []
    for j, k in enumerate(ids):
        out.append(count[k] + 1)
        count[k] = 0 if done[j] else count[k] + 1
    return np.asarray(out)


@pytest.mark.parametrize("case", CASES)
def test_import_matches_tianshou_then_continues(case):
    record = EXPECTED[case]
    buf = from_tianshou_hdf5(DATA / f"tianshou_{case}.h5")
    assert isinstance(buf, KINDS[case])
    _check_state(buf, record["saved"], f"{case} imported")
    for n, op in enumerate(record["continue"]):
        what = f"{case} continued {op['op']} {n}"
        if op["op"] == "update_weight":
            buf = buf.update_weight(np.asarray(op["index"]), np.asarray(op["weight"]))
            _check_state(buf, op["state_after"], what)
            continue
        batch = _value(op["input"])
        if _core(buf).ignore_obs_next:
            batch.pop("obs_next")
        ids = op["buffer_ids"]
        running = _running_lengths(_core(buf), ids, batch)
        buf, res = _add(buf, batch, None if ids is None else np.asarray(ids))
        out = op["output"]
        np.testing.assert_array_equal(np.reshape(res.index, -1), out["index"], err_msg=what)
        assert_close(
            np.reshape(res.episode_return, np.shape(out["episode_return"])),
            out["episode_return"],
            what,
        )
        np.testing.assert_array_equal(
            np.reshape(res.episode_length, -1), out["episode_length"], err_msg=what
        )
        # E7: for an episode longer than its sub-buffer Tianshou reports an overwritten start
        # slot; jaxbuf reports the oldest stored step (see docs/checkpoints.md).
        fresh = running <= _core(buf).subbuffer_size
        np.testing.assert_array_equal(
            np.reshape(res.episode_start, -1)[fresh],
            np.asarray(out["episode_start"])[fresh],
            err_msg=what,
        )
        _check_state(buf, op["state_after"], what)


def test_vector_fixture_covers_an_overlong_episode():
    state = EXPECTED["vrb"]["saved"]
    assert max(state["ep_len"]) > 3 and 0 in state["lengths"]  # E7 case and an empty child


def test_imported_buffer_checkpoints(tmp_path):
    buf = from_tianshou_hdf5(DATA / "tianshou_vrb.h5")
    ckpt.save(tmp_path / "c", buf)
    assert_bit_identical(ckpt.restore(tmp_path / "c"), buf)


def test_save_only_last_obs_frames_option():
    buf = from_tianshou_hdf5(DATA / "tianshou_lastobs.h5", obs_stack_len=5)
    assert buf.input_spec()["obs"].shape == (5, 2) and buf.global_storage()["obs"].shape == (5, 2)


# ---------------------------------------------------------------- refusals
def _copy(tmp_path, case="vrb"):
    dst = tmp_path / f"{case}.h5"
    shutil.copy(DATA / f"tianshou_{case}.h5", dst)
    return dst


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_restricted_unpickler_refuses_other_globals(tmp_path, capsys):
    path = _copy(tmp_path)
    with h5py.File(path, "r+") as f:
        attrs = dict(f["buffers"].attrs)
        del f["buffers"]
        f.create_dataset("buffers", data=np.frombuffer(pickle.dumps([_Evil()]), np.int8))
        f["buffers"].attrs.update(attrs)
    with pytest.raises(
        pickle.UnpicklingError,
        match=r"refusing to load 'builtins.print' from "
        r"the pickled 'buffers' member of .*vrb.h5",
    ):
        from_tianshou_hdf5(path)
    assert "pwned" not in capsys.readouterr().out


def test_pickled_data_column_is_refused(tmp_path):
    path = _copy(tmp_path, "rb")
    with h5py.File(path, "r+") as f:
        f["_meta"].create_dataset("note", data=np.frombuffer(pickle.dumps([None] * 6), np.int8))
        f["_meta"]["note"].attrs["__data_type__"] = "pickled_ndarray"
    with pytest.raises(ValueError, match=r"field 'note' was pickled by Tianshou"):
        from_tianshou_hdf5(path)


@pytest.mark.parametrize(
    "marker, name",
    [("cached_buffer_num", "CachedReplayBuffer"), ("compute_reward_fn", "HERReplayBuffer")],
)
def test_unsupported_kinds_are_named(tmp_path, marker, name):
    path = _copy(tmp_path, "rb")
    with h5py.File(path, "r+") as f:
        f.attrs[marker] = 1
    with pytest.raises(NotImplementedError, match=name):
        from_tianshou_hdf5(path)


def test_missing_empty_and_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no Tianshou HDF5 file at .*nope.h5"):
        from_tianshou_hdf5(tmp_path / "nope.h5")
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(ValueError, match=r"text.h5 is not a readable HDF5 file"):
        from_tianshou_hdf5(tmp_path / "text.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.create_dataset("x", data=np.arange(3))
    with pytest.raises(ValueError, match=r"other.h5 is not a Tianshou save_hdf5 buffer"):
        from_tianshou_hdf5(tmp_path / "other.h5")
    path = _copy(tmp_path, "rb")
    with h5py.File(path, "r+") as f:
        del f["_meta"]
        f.create_group("_meta")
    with pytest.raises(ValueError, match="empty Tianshou buffer"):
        from_tianshou_hdf5(path)


def test_int64_overflow_is_refused(tmp_path):
    path = _copy(tmp_path, "rb")
    with h5py.File(path, "r+") as f:
        f["_meta"]["act"][0] = 2**40
    with pytest.raises(ValueError, match=r"field 'act' has values outside int32"):
        from_tianshou_hdf5(path)


def test_without_h5py_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(ImportError, match=r"pip install 'jaxbuf\[hdf5\]'"):
        from_tianshou_hdf5(DATA / "tianshou_rb.h5")
