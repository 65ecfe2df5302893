"""Replaying the recorded Tianshou 2.0.1 runs (tests/data, schema in the reference SCHEMA.md).

The JSON was recorded by running Tianshou itself; each scenario is a constructor call and a
list of operations with their outputs. These helpers rebuild the same buffer in jaxbuf and
apply the adds; the test modules compare the outputs.

Every ``tests/data/tianshou_cases*.json`` is read: the public reference cases and the runs
recorded by ``tests/data/record_tianshou_cases.py``. More files in the same format can be
replayed by listing them in the environment variable ``JAXBUF_ORACLE_CASES``
(``os.pathsep``-separated), e.g.
``JAXBUF_ORACLE_CASES=/path/to/cases.json python -m pytest tests -k oracle``.
"""

from __future__ import annotations

import json
import os
from functools import partial
from pathlib import Path

import jax
import numpy as np
import pytest
from helpers import assert_close

import jaxbuf
from jaxbuf.cached import CachedReplayBuffer

DATA_DIR = Path(__file__).parent / "data"
ENV_VAR = "JAXBUF_ORACLE_CASES"
PUBLIC = "tianshou_cases_public"
ROW_KEYS = ("obs", "act", "rew", "terminated", "truncated", "obs_next")
CORE_OPTIONS = ("stack_num", "ignore_obs_next", "save_only_last_obs", "sample_avail")


def case_files() -> list[Path]:
    """The case files: ``tests/data/tianshou_cases*.json``, then ``$JAXBUF_ORACLE_CASES``."""
    files = sorted(DATA_DIR.glob("tianshou_cases*.json"))
    files += [Path(p) for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p]
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{ENV_VAR} names missing oracle files: {missing}")
    return files


def scenarios(*types: str) -> list[dict]:
    """The recorded scenarios whose buffer type is one of ``types``, from every case file.

    Each scenario gets an ``id`` (``<file stem>:<name>``) for test ids."""
    out = []
    for path in case_files():
        with open(path) as f:
            data = json.load(f)
        for scn in data["scenarios"]:
            if scn["buffer"]["type"] in types:
                out.append({**scn, "id": f"{path.stem}:{scn['name']}"})
    return out


def replay_params(scns: list[dict]) -> list:
    """``(scenario, jit)`` test parameters: the public cases are replayed eagerly and under
    ``jit``; the others (more numerous) under ``jit`` only, which keeps the suite's time in
    bounds (eager replays compile every primitive per shape)."""
    params = []
    for scn in scns:
        modes = (False, True) if scn["id"].startswith(PUBLIC + ":") else (True,)
        for jit in modes:
            params.append(pytest.param(scn, jit, id=f"{'jit' if jit else 'eager'}-{scn['id']}"))
    return params


def first_add(scn: dict) -> dict:
    return next(op for op in scn["ops"] if op["op"] == "add")


def example_of(scn: dict) -> dict:
    """One transition shaped like the scenario's inputs (dtypes as recorded)."""
    op = first_add(scn)
    ex = {}
    for key in ROW_KEYS:
        if key in op["input"]:
            row = np.asarray(op["input"][key][0], dtype=op["input_dtypes"][key])
            ex[key] = row
    return ex


def rows_of(op: dict, single: bool) -> dict:
    """The add op's input as a batch (without the leading axis for the single form)."""
    batch = {
        key: np.asarray(op["input"][key], dtype=op["input_dtypes"][key])
        for key in ROW_KEYS
        if key in op["input"]
    }
    if single:
        batch = {k: v[0] for k, v in batch.items()}
    return batch


def build(scn: dict):
    """The jaxbuf buffer matching the scenario's constructor call (any recorded type)."""
    args = dict(scn["buffer"]["args"])
    kind = scn["buffer"]["type"]
    opts = {k: args.pop(k) for k in CORE_OPTIONS if k in args}
    ex = example_of(scn)
    if opts.get("ignore_obs_next"):
        ex.pop("obs_next", None)
    if kind == "ReplayBuffer":
        return jaxbuf.ReplayBuffer.create(ex, args["size"], **opts)
    if kind == "VectorReplayBuffer":
        return jaxbuf.VectorReplayBuffer.create(ex, args["total_size"], args["buffer_num"], **opts)
    if kind == "CachedReplayBuffer":
        return CachedReplayBuffer.create(
            ex, args["main_size"], args["cached_buffer_num"], args["max_episode_length"], **opts
        )
    prio = {"alpha": args["alpha"], "beta": args["beta"]}
    prio["weight_norm"] = args.get("weight_norm", True)
    if kind == "PrioritizedReplayBuffer":
        return jaxbuf.PrioritizedReplayBuffer.create(ex, args["size"], **prio, **opts)
    if kind == "PrioritizedVectorReplayBuffer":
        return jaxbuf.PrioritizedVectorReplayBuffer.create(
            ex, args["total_size"], args["buffer_num"], **prio, **opts
        )
    raise ValueError(f"unknown recorded buffer type {kind!r}")


def add(buf, op: dict):
    """Apply a recorded add op; returns ``(buf, result)``."""
    single = op["call_form"] == "single"
    batch = rows_of(op, single)
    if buf.ignore_obs_next:
        batch.pop("obs_next", None)
    ids = op["buffer_ids"]
    if ids is not None and buf.buffer_num == 1:
        ids = None
    return buf.add(batch, None if ids is None else np.asarray(ids))


def check_state(buf, state: dict, what: str) -> None:
    """The recorded counters (``State`` in the schema) against a core buffer's."""
    m = buf.subbuffer_size
    assert len(buf) == state["len"], what
    np.testing.assert_array_equal(buf.last_index, state["last_index"], err_msg=what)
    for k, sub in enumerate(state["subbuffers"]):
        assert sub["offset"] == k * m and sub["maxsize"] == m, what
        assert int(buf.lengths[k]) == sub["len"], what
        assert int(buf.insertion_idx[k]) == sub["insertion_idx"], what
        assert int(buf.ep_len[k]) == sub["ep_len"], what
        assert int(buf.ep_start[k]) == sub["ep_start_idx"], what
        assert_close(buf.ep_return[k], sub["ep_return"], what + " ep_return")


def check_add(buf, res, op: dict, what: str) -> None:
    """A recorded add's outputs against jaxbuf's ``AddResult`` (``buf``: the core after it)."""
    out = op["output"]
    np.testing.assert_array_equal(res.index, out["insertion_idx"], err_msg=what)
    assert_close(res.episode_return, out["ep_return"], what)
    np.testing.assert_array_equal(res.episode_length, out["ep_len"], err_msg=what)
    # E7: Tianshou reports a start slot that was already overwritten when the episode is
    # longer than its sub-buffer; jaxbuf reports the oldest stored step instead.
    ids = op["buffer_ids"]
    ids = np.arange(buf.buffer_num) if ids is None else np.asarray(ids)
    if buf.buffer_num == 1:
        ids = np.zeros_like(ids)
    running = np.asarray(buf.ep_len)[ids]
    stale = (np.asarray(res.episode_length) > buf.subbuffer_size) | (running > buf.subbuffer_size)
    np.testing.assert_array_equal(
        np.asarray(res.episode_start)[~stale], np.asarray(out["ep_start_idx"])[~stale], err_msg=what
    )


def check_snapshot(buf, core, op: dict, what: str) -> bool:
    """A recorded snapshot against ``buf`` (``core``: its core buffer, for the counters): the
    state, the storage, ``prev``/``next`` of every slot, ``unfinished_index`` and
    ``sample_indices(0)``. False when it was recorded on an empty buffer (nothing to compare)."""
    check_state(core, op["state"], what)
    if op["prev"] is None:
        # E5: Tianshou raises on an empty buffer; jaxbuf returns the sub-buffer's offset
        # (documented), so there is nothing recorded to compare.
        assert len(buf) == 0, what
        return False
    stored = buf.global_storage()
    for key, rows in op["data"].items():
        got = stored["terminated"] | stored["truncated"] if key == "done" else stored[key]
        assert_close(got, rows, what + " data " + key, atol=1e-7)
    idx = np.arange(buf.maxsize)
    np.testing.assert_array_equal(buf.prev(idx), op["prev"], err_msg=what + " prev")
    np.testing.assert_array_equal(buf.next(idx), op["next"], err_msg=what + " next")
    np.testing.assert_array_equal(
        buf.unfinished_index_compact(), op["unfinished_index"], err_msg=what + " unfinished"
    )
    np.testing.assert_array_equal(
        buf.chronological_indices(), op["sample_indices_0"], err_msg=what + " sample_indices(0)"
    )
    return True


def check_sample_support(got, expected, allowed: set, what: str) -> None:
    """RNG-dependent draws: only their support is compared with the slots one may draw.

    With nothing to draw from (empty, or ``sample_avail`` with no full stack yet) Tianshou
    returns ``[]`` for ``batch_size=-1`` and raises for a positive one; jaxbuf's documented
    result is slot 0 for every draw.
    """
    got, expected = set(np.asarray(got).tolist()), set(np.asarray(expected).tolist())
    if not allowed:
        assert got == {0} and not expected, what
        return
    assert got <= allowed, what
    assert expected <= allowed, what


def check_prefix_sum(got, op: dict, leaves, what: str) -> None:
    """A ``prefix_sum_query``: jaxbuf's float32 answers against Tianshou's float64 ones.

    Each answer must equal the recorded one, except where the query lies on a boundary of the
    cumulative sum to within float32 resolution (``4 * eps32 * total``): there the float32
    tree and Tianshou's float64 tree (whose own tie-breaking depends on the order its nodes
    were summed in) may pick either neighbour, and the test accepts any slot with positive
    priority whose cumulative interval ``[cum[i] - p_i, cum[i]]`` is within that tolerance of
    the query (docs/prioritized.md, "tree precision").
    """
    got, expected = np.asarray(got), np.asarray(op["output"])
    leaves = np.asarray(leaves, np.float64)
    cum = np.cumsum(leaves)
    tol = 4 * float(np.finfo(np.float32).eps) * cum[-1]
    for j, v in enumerate(op["values"]):
        g = int(got[j])
        if g == expected[j]:
            continue
        ok = leaves[g] > 0 and cum[g] - leaves[g] <= v + tol and v - tol <= cum[g]
        near = np.abs(cum - v).min() <= tol
        assert ok and near, f"{what}: query {v!r} gave slot {g}, recorded {expected[j]}"


def check_getitem(buf, op: dict, what: str) -> None:
    """A recorded ``buf[index]`` (every recorded field)."""
    got = read_padded(buf.__getitem__, op["index"], buf.maxsize)
    for key, expected in op["output"].items():
        assert_close(got[key], expected, what + " " + key)


def check_get(buf, op: dict, what: str) -> None:
    """A recorded ``buf.get(index, key, stack_num)``."""
    read = partial(buf.get, key=op["key"], stack_num=op["stack_num"])
    assert_close(read_padded(read, op["index"], buf.maxsize), op["output"], what)


def read_padded(read, index, size: int):
    """``read(index)`` on ``index`` padded to ``size`` entries by repeating its first entry, cut
    back to ``len(index)`` rows: one array shape per buffer, so the replay compiles each read
    once instead of once per index length (the reads are row-wise, padding changes nothing)."""
    index = np.asarray(index)
    count = len(index)
    if count == 0 or count >= size:
        return read(index)
    padded = np.concatenate([index, np.full(size - count, index[0], index.dtype)])
    return jax.tree.map(lambda x: np.asarray(x)[:count], read(padded))
