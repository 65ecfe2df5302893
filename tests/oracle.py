"""Replaying the recorded Tianshou 2.0.1 runs (tests/data, schema in the reference SCHEMA.md).

The JSON was recorded by running Tianshou itself; each scenario is a constructor call and a
list of operations with their outputs. These helpers rebuild the same buffer in jaxbuf and
apply the adds; the test modules compare the outputs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import jaxbuf

DATA = Path(__file__).parent / "data" / "tianshou_cases_public.json"
ROW_KEYS = ("obs", "act", "rew", "terminated", "truncated", "obs_next")


def scenarios(*types: str) -> list[dict]:
    """The recorded scenarios whose buffer type is one of ``types``."""
    with open(DATA) as f:
        data = json.load(f)
    return [s for s in data["scenarios"] if s["buffer"]["type"] in types]


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
    """The jaxbuf buffer matching the scenario's constructor call."""
    args = dict(scn["buffer"]["args"])
    kind = scn["buffer"]["type"]
    opts = {
        k: args.pop(k)
        for k in ("stack_num", "ignore_obs_next", "save_only_last_obs", "sample_avail")
        if k in args
    }
    ex = example_of(scn)
    if opts.get("ignore_obs_next"):
        ex.pop("obs_next", None)
    if kind == "ReplayBuffer":
        return jaxbuf.ReplayBuffer.create(ex, args["size"], **opts)
    if kind == "VectorReplayBuffer":
        return jaxbuf.VectorReplayBuffer.create(ex, args["total_size"], args["buffer_num"], **opts)
    raise ValueError(kind)


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
