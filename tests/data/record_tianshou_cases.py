"""Record more Tianshou 2.0.1 runs in the oracle format (``tianshou-buffer-oracle/1``).

Usage (needs tianshou 2.0.1 and torch, i.e. the ``bench`` and ``torch`` extras; not run by
the tests, which read its output)::

    python tests/data/record_tianshou_cases.py tests/data/tianshou_cases_recorded.json

The public cases (``tianshou_cases_public.json``) cover one scenario per buffer type. This
script runs Tianshou itself on further configurations (frame stacking with
``ignore_obs_next`` / ``save_only_last_obs`` / ``sample_avail``, uneven vector buffers with
routed subsets, prioritized buffers with and without ``weight_norm``, the prioritized vector
buffer, cached buffers whose episodes outgrow their caches, integer and multi-axis
observations, long wrap-around streams) and writes every input and output with the schema of
the reference oracle, so the same replay tests read both files. Streams are generated from
fixed seeds; observation values are small integers, exact in float32.

For a differential campaign beyond the committed cases, ``--random N --seed S`` records ``N``
random configurations instead (buffer type, sizes, stacking flags, routing, dtypes, done
rates, stream length; ``random_specs``), and the replay tests read the file from
``JAXBUF_ORACLE_CASES``::

    python tests/data/record_tianshou_cases.py /tmp/cases.json --random 150 --seed 2
    JAXBUF_ORACLE_CASES=/tmp/cases.json python -m pytest tests -k oracle
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from tianshou.algorithm.algorithm_base import Algorithm
from tianshou.data import (
    Batch,
    CachedReplayBuffer,
    PrioritizedReplayBuffer,
    PrioritizedVectorReplayBuffer,
    ReplayBuffer,
    VectorReplayBuffer,
)

warnings.filterwarnings("ignore", category=RuntimeWarning)

EPS = float(np.finfo(np.float32).eps)


@dataclass
class Spec:
    """One scenario: a constructor call, an input stream and which reads to record."""

    name: str
    description: str
    kind: str
    args: dict
    seed: int
    steps: int
    obs_shape: tuple = (2,)
    obs_dtype: str = "float32"
    act_dtype: str = "int64"
    rew_dtype: str = "float64"
    p_term: float = 0.15
    p_trunc: float = 0.1
    rew_size: int = 0  # > 0: vector rewards of this many components
    ids: str = "all"  # "all" | "subsets" | "perm" | "single" (call form, plain buffer only)
    n_envs: int = 1
    frames: int = 0  # > 0: obs arrive as stacks of this many frames (save_only_last_obs)
    read_every: int = 4  # record getitem / returns / prio reads every this many adds
    prio_updates: bool = False
    returns: bool = True
    extra: dict = field(default_factory=dict)


def make(spec: Spec):
    a = dict(spec.args)
    if spec.kind == "ReplayBuffer":
        return ReplayBuffer(a.pop("size"), **a)
    if spec.kind == "VectorReplayBuffer":
        return VectorReplayBuffer(a.pop("total_size"), a.pop("buffer_num"), **a)
    if spec.kind == "PrioritizedReplayBuffer":
        return PrioritizedReplayBuffer(a.pop("size"), **a)
    if spec.kind == "PrioritizedVectorReplayBuffer":
        return PrioritizedVectorReplayBuffer(a.pop("total_size"), a.pop("buffer_num"), **a)
    if spec.kind == "CachedReplayBuffer":
        return CachedReplayBuffer(
            ReplayBuffer(a["main_size"]), a["cached_buffer_num"], a["max_episode_length"]
        )
    raise ValueError(spec.kind)


def tolist(x):
    return np.asarray(x).tolist()


def parts(buf):
    """(offset, sub-buffer) pairs; a plain buffer is its own single part."""
    if hasattr(buf, "buffers"):
        return list(zip(buf._offset.tolist(), buf.buffers, strict=True))
    return [(0, buf)]


def state_of(buf) -> dict:
    subs = []
    for off, b in parts(buf):
        subs.append(
            {
                "offset": int(off),
                "maxsize": int(b.maxsize),
                "len": len(b),
                "insertion_idx": int(b._insertion_idx),
                "last_index": int(np.asarray(b.last_index).reshape(-1)[0]),
                "ep_return": tolist(b._ep_return),
                "ep_len": int(b._ep_len),
                "ep_start_idx": int(b._ep_start_idx),
            }
        )
    last = tolist(np.atleast_1d(buf.last_index))
    return {"len": len(buf), "last_index": last, "subbuffers": subs}


def chronological(state: dict) -> list[int]:
    out = []
    for s in state["subbuffers"]:
        first = s["insertion_idx"] - s["len"]
        out += [s["offset"] + (first + j) % s["maxsize"] for j in range(s["len"])]
    return out


def attempt(fn):
    try:
        return tolist(fn()), None
    except Exception as exc:  # noqa: BLE001 - recorded, not handled
        return None, f"{type(exc).__name__}: {str(exc)[:80]}"


def snapshot(buf, label: str) -> dict:
    state = state_of(buf)
    data, dtypes = {}, {}
    if len(buf):
        for key in ("obs", "act", "rew", "terminated", "truncated", "done", "obs_next"):
            if key in buf._meta.get_keys():
                arr = np.asarray(buf._meta[key])
                data[key], dtypes[key] = arr.tolist(), str(arr.dtype)
    m = np.arange(buf.maxsize)
    prev, err1 = attempt(lambda: buf.prev(m))
    nxt, _ = attempt(lambda: buf.next(m))
    unfinished, err2 = attempt(buf.unfinished_index)
    sample0, _ = attempt(lambda: buf.sample_indices(0))
    errors = [e for e in (err1, err2) if e]
    return {
        "op": "snapshot",
        "label": label,
        "state": state,
        "error": "; ".join(errors) if errors else None,
        "data": data,
        "dtypes": dtypes,
        "prev": prev,
        "next": nxt,
        "unfinished_index": unfinished,
        "sample_indices_0": sample0,
        "chronological_indices": chronological(state),
    }


class Stream:
    """Per-env episodes: obs = [1000 * env + step, step in episode] (plus extra axes)."""

    def __init__(self, spec: Spec):
        self.spec = spec
        self.rng = np.random.default_rng(spec.seed)
        self.t = np.zeros(spec.n_envs, int)
        self.k = np.zeros(spec.n_envs, int)

    def frame(self, env: int, step: int, k: int) -> np.ndarray:
        base = np.zeros(self.spec.obs_shape)
        flat = base.reshape(-1)
        flat[0] = 1000 * env + step
        if flat.size > 1:
            flat[1] = k
        if flat.size > 2:
            flat[2:] = (step + np.arange(flat.size - 2)) % 7
        return base

    def obs(self, env: int, step: int, k: int) -> np.ndarray:
        if not self.spec.frames:
            return self.frame(env, step, k)
        hist = [self.frame(env, step - j, max(k - j, 0)) for j in reversed(range(self.spec.frames))]
        return np.stack(hist)

    def rows(self, ids: list[int]) -> dict:
        s, rng = self.spec, self.rng
        out = {key: [] for key in ("obs", "act", "rew", "terminated", "truncated", "obs_next")}
        for e in ids:
            t, k = self.t[e] + 1, self.k[e]
            term = bool(rng.random() < s.p_term)
            trunc = bool(rng.random() < s.p_trunc)
            out["obs"].append(self.obs(e, t, k))
            out["obs_next"].append(self.obs(e, t + 1, k + 1))
            out["act"].append(rng.integers(0, 4) if s.act_dtype.startswith("int") else rng.normal())
            if s.rew_size:
                out["rew"].append(np.round(rng.normal(size=s.rew_size), 3))
            else:
                out["rew"].append(round(float(rng.normal()), 3))
            out["terminated"].append(term)
            out["truncated"].append(trunc)
            self.t[e] = t
            self.k[e] = 0 if (term or trunc) else k + 1
        dtypes = {
            "obs": s.obs_dtype,
            "obs_next": s.obs_dtype,
            "act": s.act_dtype,
            "rew": s.rew_dtype,
            "terminated": "bool",
            "truncated": "bool",
        }
        return {key: np.asarray(v, dtype=dtypes[key]) for key, v in out.items()}


def add_op(buf, rows: dict, ids, single: bool) -> dict:
    if single:
        row = {k: v[0] for k, v in rows.items()}
        batch = Batch(
            obs=row["obs"],
            act=row["act"],
            rew=row["rew"] if row["rew"].ndim else float(row["rew"]),
            terminated=bool(row["terminated"]),
            truncated=bool(row["truncated"]),
            obs_next=row["obs_next"],
        )
        out = buf.add(batch)
    else:
        out = buf.add(Batch(**rows), buffer_ids=ids)
    names = ("insertion_idx", "ep_return", "ep_len", "ep_start_idx")
    return {
        "op": "add",
        "call_form": "single" if single else "stacked",
        "buffer_ids": ids,
        "input": {k: v.tolist() for k, v in rows.items()},
        "input_dtypes": {k: str(v.dtype) for k, v in rows.items()},
        "output": {n: tolist(v) for n, v in zip(names, out, strict=True)},
        "state_after": state_of(buf),
    }


def getitem_op(buf, index) -> dict:
    batch = buf[np.asarray(index, dtype=int)]
    keys = ("obs", "obs_next", "act", "rew", "terminated", "truncated", "done", "weight")
    return {
        "op": "getitem",
        "index": list(index),
        "output": {k: tolist(batch[k]) for k in keys if k in batch.get_keys()},
    }


def gae_ops(buf, index, rng) -> list[dict]:
    ops = []
    n = len(index)
    v1 = np.round(rng.normal(size=n), 3)
    v0 = np.round(rng.normal(size=n), 3)
    for v_s_, v_s, gamma, lam in (
        (v1, v0, 0.9, 0.8),
        (v1, v0, 0.99, 0.95),
        (v1, None, 0.9, 0.8),
        (None, None, 0.9, 1.0),
        (v1, v0, 1.0, 0.0),
    ):
        idx = np.asarray(index, dtype=int)
        ret, adv = Algorithm.compute_episodic_return(
            buf[idx], buf, idx, v_s_=v_s_, v_s=v_s, gamma=gamma, gae_lambda=lam
        )
        ops.append(
            {
                "op": "gae",
                "indices": list(index),
                "v_s_": None if v_s_ is None else v_s_.tolist(),
                "v_s": None if v_s is None else v_s.tolist(),
                "gamma": gamma,
                "gae_lambda": lam,
                "output": {"returns": tolist(ret), "advantages": tolist(adv)},
            }
        )
    q = np.round(rng.normal(scale=5.0, size=buf.maxsize), 3)
    for n_step in (1, 2, 3, 5):
        idx = np.asarray(index, dtype=int)
        seen = []

        def target_q(_buf, i, q=q, seen=seen):
            seen.append(np.asarray(i).copy())
            return torch.tensor(q[i], dtype=torch.float64)

        res = Algorithm.compute_nstep_return(buf[idx], buf, idx, target_q, gamma=0.9, n_step=n_step)
        ops.append(
            {
                "op": "nstep",
                "indices": list(index),
                "q_table": q.tolist(),
                "gamma": 0.9,
                "n_step": n_step,
                "output": {
                    "returns": res.returns.numpy().reshape(-1).tolist(),
                    "target_q_fn_indices": tolist(seen[0]),
                },
            }
        )
    return ops


def prio_state_op(buf, index) -> dict:
    idx = np.asarray(index, dtype=int)
    return {
        "op": "prio_state",
        "index": list(index),
        "output": {
            "tree_leaves": tolist(buf.weight[np.arange(buf.maxsize)]),
            "tree_total": float(buf.weight.reduce()),
            "max_prio": float(buf._max_prio),
            "min_prio": float(buf._min_prio),
            "alpha": float(buf._alpha),
            "beta": float(buf._beta),
            "get_weight": tolist(buf.get_weight(idx)),
            "batch_weight": tolist(buf[idx].weight),
        },
    }


def prio_ops(buf, spec: Spec, rng, valid: list[int]) -> list[dict]:
    ops = []
    if spec.prio_updates and valid:
        index = rng.choice(valid, size=min(5, len(valid)), replace=True).tolist()
        if len(index) > 1:
            index[-1] = index[0]  # a duplicate: the last one wins
        new = np.round(rng.normal(scale=2.0, size=len(index)), 3)
        new[rng.random(len(index)) < 0.2] = 0.0
        buf.update_weight(np.asarray(index), new)
        ops.append({"op": "update_weight", "index": index, "new_weight": new.tolist()})
    ops.append(prio_state_op(buf, valid))
    fractions = [0.0, 0.1, 0.3, 0.5, 0.77, 0.999]
    total = float(buf.weight.reduce())
    values = [f * total for f in fractions]
    ops.append(
        {
            "op": "prefix_sum_query",
            "fractions": fractions,
            "values": values,
            "output": tolist(buf.weight.get_prefix_sum_idx(np.asarray(values))),
        }
    )
    return ops


def sample_ops(buf, spec: Spec) -> list[dict]:
    ops = []
    prio = spec.kind.startswith("Prioritized")
    for bs in (0, -1, None, 5):
        seed = 7 if prio else None
        if seed is not None:
            np.random.seed(seed)
        out, err = attempt(lambda bs=bs: buf.sample_indices(bs))
        if err:
            continue
        rng_dep = (
            prio
            and bs != 0
            or (bs is not None and bs > 0)
            or (bs is None and spec.kind == "ReplayBuffer")
        )
        ops.append(
            {
                "op": "sample_indices",
                "batch_size": bs,
                "output": out,
                "rng_dependent": bool(rng_dep),
                "np_global_seed": seed,
            }
        )
    return ops


def ids_for(spec: Spec, step: int, rng) -> list[int] | None:
    n = spec.n_envs
    if spec.ids == "single":
        return None
    if spec.kind in ("ReplayBuffer", "PrioritizedReplayBuffer"):
        return [0]  # the stacked call form of a plain buffer needs buffer_ids
    if spec.ids == "none":
        return None
    if spec.ids == "all":
        return None if spec.kind != "CachedReplayBuffer" else list(range(n))
    if step % 5 == 0:
        return list(range(n))
    k = int(rng.integers(1, n + 1))
    chosen = rng.choice(n, size=k, replace=False).tolist()
    return chosen if spec.ids == "perm" else sorted(chosen)


def record(spec: Spec) -> dict:
    buf = make(spec)
    stream = Stream(spec)
    rng = np.random.default_rng(spec.seed + 1000)
    ops = [snapshot(buf, "empty")]
    returns_at = {spec.steps}  # GAE / n-step once, at the end of the stream
    for step in range(1, spec.steps + 1):
        ids = ids_for(spec, step, rng)
        envs = list(range(spec.n_envs)) if ids is None else ids
        rows = stream.rows(envs)
        ops.append(add_op(buf, rows, ids, spec.ids == "single"))
        snap = snapshot(buf, f"after_add_{step}")
        ops.append(snap)
        chrono = snap["chronological_indices"]
        if step == spec.steps // 2 and "set_beta" in spec.extra:
            buf.set_beta(spec.extra["set_beta"])
            ops.append({"op": "set_beta", "beta": spec.extra["set_beta"]})
            ops.append(prio_state_op(buf, chrono))
        if step % spec.read_every and step != spec.steps:
            continue
        physical = sorted(chrono)
        ops.append(getitem_op(buf, chrono))
        if physical != chrono:
            ops.append(getitem_op(buf, physical))
        if step == spec.read_every and len(buf) < buf.maxsize:
            ops.append(getitem_op(buf, list(range(buf.maxsize))))  # never-written slots too
        if spec.args.get("stack_num", 1) > 1 or spec.frames:
            for k in (None, 1, 2, 4):
                out = buf.get(np.asarray(chrono[::2]), "obs", stack_num=k)
                ops.append(
                    {
                        "op": "get",
                        "index": chrono[::2],
                        "key": "obs",
                        "stack_num": k,
                        "output": tolist(out),
                    }
                )
        if spec.returns and step in returns_at:
            ops += gae_ops(buf, chrono, rng)
            if physical != chrono:
                ops += gae_ops(buf, physical, rng)[:1]
        if spec.kind.startswith("Prioritized"):
            ops += prio_ops(buf, spec, rng, chrono)
        ops += sample_ops(buf, spec)
    return {
        "name": spec.name,
        "description": spec.description,
        "seed": spec.seed,
        "buffer": {"type": spec.kind, "args": spec.args},
        "layout": {
            "maxsize": int(buf.maxsize),
            "subbuffer_edges": tolist(buf.subbuffer_edges),
            "subbuffer_sizes": [int(b.maxsize) for _, b in parts(buf)],
        },
        "ops": ops,
    }


SPECS = [
    Spec(
        "rec_vec_perm",
        "VectorReplayBuffer(9, 3): buffer_ids in any order (unsorted subsets).",
        "VectorReplayBuffer",
        {"total_size": 9, "buffer_num": 3},
        seed=14,
        steps=14,
        ids="perm",
        n_envs=3,
    ),
    Spec(
        "rec_rb_vector_reward",
        "ReplayBuffer(6): rewards with 2 components (episode returns are vectors).",
        "ReplayBuffer",
        {"size": 6},
        seed=15,
        steps=12,
        rew_size=2,
        returns=False,
    ),
    Spec(
        "rec_rb_last_obs_ignore_next",
        "ReplayBuffer(7, stack_num=3, save_only_last_obs=True, ignore_obs_next=True).",
        "ReplayBuffer",
        {"size": 7, "stack_num": 3, "save_only_last_obs": True, "ignore_obs_next": True},
        seed=16,
        steps=12,
        frames=3,
        returns=False,
    ),
    Spec(
        "rec_vec_last_obs",
        "VectorReplayBuffer(8, 2, stack_num=2, save_only_last_obs=True).",
        "VectorReplayBuffer",
        {"total_size": 8, "buffer_num": 2, "stack_num": 2, "save_only_last_obs": True},
        seed=17,
        steps=10,
        frames=2,
        n_envs=2,
        ids="perm",
        returns=False,
    ),
    Spec(
        "rec_prio_stack2",
        "PrioritizedReplayBuffer(8, alpha=0.5, beta=0.5, stack_num=2).",
        "PrioritizedReplayBuffer",
        {"size": 8, "alpha": 0.5, "beta": 0.5, "weight_norm": True, "stack_num": 2},
        seed=18,
        steps=12,
        prio_updates=True,
        returns=False,
    ),
    Spec(
        "rec_cached_default_ids",
        "CachedReplayBuffer(ReplayBuffer(6), 2, 4): buffer_ids=None (all caches in order).",
        "CachedReplayBuffer",
        {"main_size": 6, "cached_buffer_num": 2, "max_episode_length": 4},
        seed=19,
        steps=12,
        ids="none",
        n_envs=2,
        p_term=0.25,
        returns=False,
    ),
    Spec(
        "rec_rb_single_wrap",
        "ReplayBuffer(5), single-step call form, 23 adds: many wraps.",
        "ReplayBuffer",
        {"size": 5},
        seed=1,
        steps=23,
        ids="single",
        p_term=0.2,
        p_trunc=0.15,
    ),
    Spec(
        "rec_rb_stack4_ignore_next",
        "ReplayBuffer(10, stack_num=4, ignore_obs_next=True).",
        "ReplayBuffer",
        {"size": 10, "stack_num": 4, "ignore_obs_next": True},
        seed=2,
        steps=17,
    ),
    Spec(
        "rec_rb_stack3_last_obs",
        "ReplayBuffer(8, stack_num=3, save_only_last_obs=True): obs arrive as 3-frame stacks.",
        "ReplayBuffer",
        {"size": 8, "stack_num": 3, "save_only_last_obs": True},
        seed=3,
        steps=14,
        frames=3,
        returns=False,
    ),
    Spec(
        "rec_rb_stack2_avail",
        "ReplayBuffer(9, stack_num=2, sample_avail=True).",
        "ReplayBuffer",
        {"size": 9, "stack_num": 2, "sample_avail": True},
        seed=4,
        steps=15,
    ),
    Spec(
        "rec_rb_uint8_image",
        "ReplayBuffer(6): uint8 obs [3, 2], float32 act and reward.",
        "ReplayBuffer",
        {"size": 6},
        seed=5,
        steps=11,
        obs_shape=(3, 2),
        obs_dtype="uint8",
        act_dtype="float32",
        rew_dtype="float32",
        returns=False,
    ),
    Spec(
        "rec_vec_4x5_subsets",
        "VectorReplayBuffer(20, 4): routed subsets of envs.",
        "VectorReplayBuffer",
        {"total_size": 20, "buffer_num": 4},
        seed=6,
        steps=24,
        ids="subsets",
        n_envs=4,
        read_every=6,
    ),
    Spec(
        "rec_vec_uneven_stack2",
        "VectorReplayBuffer(11, 3, stack_num=2): sub-buffers of 4.",
        "VectorReplayBuffer",
        {"total_size": 11, "buffer_num": 3, "stack_num": 2},
        seed=7,
        steps=14,
        ids="subsets",
        n_envs=3,
    ),
    Spec(
        "rec_vec_ignore_next",
        "VectorReplayBuffer(8, 2, ignore_obs_next=True), all envs.",
        "VectorReplayBuffer",
        {"total_size": 8, "buffer_num": 2, "ignore_obs_next": True},
        seed=8,
        steps=10,
        n_envs=2,
    ),
    Spec(
        "rec_prio_no_norm",
        "PrioritizedReplayBuffer(7, alpha=1.0, beta=0.5, weight_norm=False).",
        "PrioritizedReplayBuffer",
        {"size": 7, "alpha": 1.0, "beta": 0.5, "weight_norm": False},
        seed=9,
        steps=16,
        prio_updates=True,
        extra={"set_beta": 0.9},
    ),
    Spec(
        "rec_prio_norm",
        "PrioritizedReplayBuffer(9, alpha=0.7, beta=0.3), weight_norm=True.",
        "PrioritizedReplayBuffer",
        {"size": 9, "alpha": 0.7, "beta": 0.3, "weight_norm": True},
        seed=10,
        steps=20,
        prio_updates=True,
        read_every=3,
        extra={"set_beta": 0.6},
    ),
    Spec(
        "rec_prio_vec",
        "PrioritizedVectorReplayBuffer(12, 3, alpha=0.6, beta=0.4).",
        "PrioritizedVectorReplayBuffer",
        {"total_size": 12, "buffer_num": 3, "alpha": 0.6, "beta": 0.4, "weight_norm": True},
        seed=11,
        steps=12,
        ids="subsets",
        n_envs=3,
        prio_updates=True,
        read_every=3,
        extra={"set_beta": 1.0},
    ),
    Spec(
        "rec_cached_3x3",
        "CachedReplayBuffer(ReplayBuffer(7), 3, 3): episodes fit mostly.",
        "CachedReplayBuffer",
        {"main_size": 7, "cached_buffer_num": 3, "max_episode_length": 3},
        seed=12,
        steps=16,
        ids="subsets",
        n_envs=3,
        p_term=0.3,
        p_trunc=0.15,
    ),
    Spec(
        "rec_cached_overlong",
        "CachedReplayBuffer(ReplayBuffer(9), 2, 2): episodes longer than the cache (E28).",
        "CachedReplayBuffer",
        {"main_size": 9, "cached_buffer_num": 2, "max_episode_length": 2},
        seed=13,
        steps=14,
        ids="all",
        n_envs=2,
        p_term=0.2,
        p_trunc=0.1,
        returns=False,
    ),
]


KINDS = (
    "ReplayBuffer",
    "VectorReplayBuffer",
    "PrioritizedReplayBuffer",
    "PrioritizedVectorReplayBuffer",
    "CachedReplayBuffer",
)


def _stacking_flags(rng: random.Random, kind: str) -> dict:
    stack = rng.choice([1, 1, 2, 3, 4])
    flags: dict = {"stack_num": stack} if stack > 1 else {}
    if rng.random() < 0.4:
        flags["ignore_obs_next"] = True
    if stack > 1 and rng.random() < 0.3:
        flags["save_only_last_obs"] = True
    if stack > 1 and "Prioritized" not in kind and rng.random() < 0.4:
        flags["sample_avail"] = True  # refused with stacking on the prioritized path
    return flags


def random_specs(n: int, seed: int) -> list[Spec]:
    """``n`` random configurations: every buffer type, small sizes, so streams wrap often."""
    rng = random.Random(seed)
    specs = []
    for i in range(n):
        kind = rng.choice(KINDS)
        flags = {} if kind == "CachedReplayBuffer" else _stacking_flags(rng, kind)
        last_obs = flags.get("save_only_last_obs", False)
        kw = dict(
            seed=rng.randrange(10**6),
            steps=rng.randrange(4, 40),
            p_term=rng.choice([0.05, 0.15, 0.3, 0.6]),
            p_trunc=rng.choice([0.0, 0.1, 0.3]),
            frames=flags.get("stack_num", 1) if last_obs else 0,
            returns=rng.random() < 0.5 and not last_obs,
        )
        if kind in ("ReplayBuffer", "PrioritizedReplayBuffer"):
            args = {"size": rng.randrange(2, 12), **flags}
            ids = rng.choice(["all", "single"]) if kind == "ReplayBuffer" else "all"
            kw.update(ids=ids, n_envs=1)
        elif kind in ("VectorReplayBuffer", "PrioritizedVectorReplayBuffer"):
            num = rng.randrange(1, 5)
            total = num * rng.randrange(2, 6) + rng.choice([0, 0, 1])
            args = {"total_size": total, "buffer_num": num, **flags}
            kw.update(ids=rng.choice(["all", "subsets", "perm"]), n_envs=num)
        else:
            num = rng.randrange(1, 4)
            args = {
                "main_size": rng.randrange(3, 12),
                "cached_buffer_num": num,
                "max_episode_length": rng.randrange(2, 6),
            }
            kw.update(ids=rng.choice(["none", "subsets", "perm"]), n_envs=num, returns=False)
        if "Prioritized" in kind:
            args.update(
                alpha=rng.choice([0.5, 0.6, 1.0]),
                beta=rng.choice([0.4, 0.5, 1.0]),
                weight_norm=rng.random() < 0.5,
            )
            kw.update(prio_updates=True, extra=rng.choice([{}, {"set_beta": 0.8}]))
        if rng.random() < 0.2 and not last_obs:
            kw.update(obs_shape=(3, 2), obs_dtype="uint8", act_dtype="float32", rew_dtype="float32")
        specs.append(Spec(f"random{seed}_{i}", f"{kind}({args})", kind, args, **kw))
    return specs


def main() -> None:
    import tianshou

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("output")
    parser.add_argument("--random", type=int, default=0, help="record N random configurations")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random configurations")
    opts = parser.parse_args()
    specs = random_specs(opts.random, opts.seed) if opts.random else SPECS
    doc = {
        "format": "tianshou-buffer-oracle/1",
        "generator": "tests/data/record_tianshou_cases.py",
        "versions": {
            "tianshou": tianshou.__version__,
            "numpy": np.__version__,
            "torch": torch.__version__,
            "python": sys.version.split()[0],
        },
        "notes": [
            "Indices are global physical slots (0 <= i < maxsize).",
            "Same conventions as tianshou_cases_public.json; 'derived' fields are not recorded.",
            f"The eps added to priorities is {EPS!r}.",
        ],
        "self_checks": {"passed": 0},
        "scenarios": [record(s) for s in specs],
    }
    with open(opts.output, "w") as f:
        json.dump(doc, f)
    print(f"wrote {len(doc['scenarios'])} scenarios to {opts.output}")


if __name__ == "__main__":
    main()
