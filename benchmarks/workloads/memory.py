"""Workload 6: bytes held per stored transition, Atari-like case.

Transition: ``obs uint8[84, 84]`` arriving as stacks of 4 frames, ``act int32``, ``rew f32``,
``terminated``, ``truncated``. The payload is one frame plus the scalars (7066 bytes).

* jaxbuf ``VectorReplayBuffer(N, 64, stack_num=4, ignore_obs_next=True,
  save_only_last_obs=True)``: every array of the state (storage and counters), allocated;
* Tianshou ``VectorReplayBuffer`` with the same options: every array it allocated;
* flashbax flat buffer: it has no frame stacking, so to return stacked observations it must
  store the stack ``uint8[4, 84, 84]`` per step (``flashbax``); storing single frames and
  sampling sequences of 4 (``flashbax[frames]``) would cut memory but let stacks cross episode
  boundaries. Its state is sized with ``jax.eval_shape`` (no allocation; same arrays).
"""

from __future__ import annotations

import math

import jax
import numpy as np

from benchmarks import data, peers
from benchmarks.harness import Result, unavailable
from benchmarks.workloads.episode import stacked_buffer

UNIT = "bytes per transition"


def payload_bytes() -> int:
    """One frame plus act, rew, terminated, truncated."""
    ex = data.atari_example(stacked=False)
    return sum(x.nbytes for x in ex.values())


def _spec_bytes(tree) -> int:
    return sum(
        math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree_util.tree_leaves(tree)
    )


def groups(cfg):
    """One group of measured byte counts."""
    n = cfg.stack_capacity
    params = {"capacity": n, "stack": data.STACK}
    payload = payload_bytes()
    out: list = [Result("memory", params, "payload", UNIT, float(payload))]
    buf = stacked_buffer(n)
    out.append(
        Result(
            "memory", params, "jaxbuf", UNIT, data.nbytes(buf) / n, note=f"{payload} payload bytes"
        )
    )
    del buf
    fbx, why = peers.module("flashbax")
    if fbx is None:
        out.append(unavailable("memory", params, "flashbax", UNIT, why))
    else:
        for lib, stacked in (("flashbax", True), ("flashbax[frames]", False)):
            fb = fbx.make_flat_buffer(
                max_length=n,
                min_length=cfg.batch_size,
                sample_batch_size=cfg.batch_size,
                add_batch_size=data.N_ENV,
            )
            spec = jax.eval_shape(fb.init, data.atari_example(stacked=stacked))
            out.append(Result("memory", params, lib, UNIT, _spec_bytes(spec) / n))
    ts, why = peers.module("tianshou.data")
    if ts is None:
        out.append(unavailable("memory", params, "tianshou", UNIT, why))
    else:
        tbuf = ts.VectorReplayBuffer(
            n, data.N_ENV, stack_num=data.STACK, ignore_obs_next=True, save_only_last_obs=True
        )
        tbuf.add(data.tianshou_batch(data.first(data.atari_step)))
        arrays = {k: v for k, v in tbuf._meta.__dict__.items() if isinstance(v, np.ndarray)}
        held = sum(v.nbytes for v in arrays.values())
        dtypes = ", ".join(f"{k}:{v.dtype}" for k, v in sorted(arrays.items()))
        out.append(Result("memory", params, "tianshou", UNIT, held / n, note=dtypes))
    yield out
