"""GAE over a ``[T, B]`` rollout, ``[128, 64]`` and ``[2048, 8]``.

* jaxbuf ``jaxbuf.returns.gae``, sequential ``lax.scan`` (default) and
  ``use_associative_scan=True`` (``jaxbuf[assoc]``);
* rlax ``truncated_generalized_advantage_estimation`` vmapped over ``B`` (its API is one
  sequence; ``discount = gamma * (1 - terminated)``, ``values`` of length ``T + 1``; it cannot
  express truncation inside a sequence, which costs it nothing here);
* Tianshou ``Algorithm.compute_episodic_return`` on a ``VectorReplayBuffer(T*B, B)`` holding the
  rollout (what its PPO calls; numba kernel plus the unfinished-episode bookkeeping).

Before timing, jaxbuf's advantages are checked against Tianshou's (same truncation semantics)
and, on a copy without truncation and with ``next_values[t] = values[t+1]``, against rlax's.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import data, peers
from benchmarks.harness import Case, compile_jit, unavailable
from benchmarks.workloads.common import loop_calls

UNIT = "us per GAE call"
GAMMA, LAMBDA = 0.99, 0.95


def rollout(t: int, b: int, seed: int = 0) -> dict:
    """float32 rewards/values/next_values and bool flags, all ``[T, B]``."""
    rng = np.random.default_rng(seed)
    return {
        "rewards": rng.normal(size=(t, b)).astype(np.float32),
        "values": rng.normal(size=(t, b)).astype(np.float32),
        "next_values": rng.normal(size=(t, b)).astype(np.float32),
        "terminated": rng.random((t, b)) < 0.01,
        "truncated": rng.random((t, b)) < 0.005,
    }


def _rlax_inputs(r: dict) -> tuple:
    discount = GAMMA * (1.0 - r["terminated"].astype(np.float32))
    values = np.concatenate([r["values"], r["next_values"][-1:]], axis=0)
    return tuple(jnp.asarray(x) for x in (r["rewards"], discount, values))


def _call_case(lib: str, fn, args: tuple, params: dict, cfg) -> Case:
    """A ``gae/call`` case: ``fn`` jitted for ``args``, called ``cfg.calls`` times."""
    compiled, secs = compile_jit(fn, *args)
    return Case(
        "gae/call",
        params,
        lib,
        loop_calls(lambda: compiled(*args), cfg.calls),
        cfg.calls,
        UNIT,
        secs,
    )


def _jaxbuf_cases(gae, r: dict, params: dict, cfg) -> list[Case]:
    args = tuple(
        jnp.asarray(r[k]) for k in ("rewards", "values", "next_values", "terminated", "truncated")
    )
    return [
        _call_case(
            lib,
            lambda *a, assoc=assoc: gae(*a, GAMMA, LAMBDA, use_associative_scan=assoc),
            args,
            params,
            cfg,
        )
        for lib, assoc in (("jaxbuf", False), ("jaxbuf[assoc]", True))
    ]


def _rlax_cases(rlax, r: dict, params: dict, cfg) -> list[Case]:
    """rlax as published (advantages only) and with the value targets jaxbuf also returns.

    ``rlax[+returns]`` computes ``advantages + values[:-1]`` in the same jitted call, so both
    libraries produce the two arrays a PPO update consumes (same outputs, same work).
    """
    fn = jax.vmap(
        rlax.truncated_generalized_advantage_estimation, in_axes=(1, 1, None, 1), out_axes=1
    )

    def with_returns(a, b, c):
        adv = fn(a, b, LAMBDA, c)
        return adv, adv + c[:-1]

    args = _rlax_inputs(r)
    return [
        _call_case("rlax", lambda a, b, c: fn(a, b, LAMBDA, c), args, params, cfg),
        _call_case("rlax[+returns]", with_returns, args, params, cfg),
    ]


def _tianshou_setup(r: dict):
    """(call, advantages_TB): a Tianshou buffer holding the rollout and the GAE call."""
    from tianshou.algorithm.algorithm_base import Algorithm
    from tianshou.data import Batch, VectorReplayBuffer

    t, b = r["rewards"].shape
    flat = {k: np.ascontiguousarray(v.T).reshape(-1) for k, v in r.items()}  # env-major
    layout = data.numpy_layout(t * b, b)
    for key in ("terminated", "truncated"):
        layout[key] = flat[key]
    layout["rew"] = flat["rewards"]
    buf = data.fill_tianshou(
        VectorReplayBuffer(t * b, b, ignore_obs_next=True), layout, data.first(data.step, b)
    )
    batch = Batch(rew=flat["rewards"], terminated=flat["terminated"], truncated=flat["truncated"])
    indices = np.arange(t * b)

    def call():
        return Algorithm.compute_episodic_return(
            batch,
            buf,
            indices,
            v_s_=flat["next_values"],
            v_s=flat["values"],
            gamma=GAMMA,
            gae_lambda=LAMBDA,
        )

    return call, call()[1].reshape(b, t).T


def _check(gae, rlax, r: dict, ts_adv) -> None:
    names = ("rewards", "values", "next_values", "terminated", "truncated")
    adv = np.asarray(gae(*(jnp.asarray(r[k]) for k in names), GAMMA, LAMBDA)[0])
    if ts_adv is not None:
        np.testing.assert_allclose(adv, ts_adv, rtol=1e-4, atol=1e-3)
    if rlax is not None:
        # rlax bootstraps step t from values[t+1] and cannot truncate inside a sequence.
        next_v = np.concatenate([r["values"][1:], r["next_values"][-1:]], axis=0)
        r0 = dict(r, truncated=np.zeros_like(r["truncated"]), next_values=next_v)
        adv0 = np.asarray(gae(*(jnp.asarray(r0[k]) for k in names), GAMMA, LAMBDA)[0])
        ref = jax.vmap(
            rlax.truncated_generalized_advantage_estimation, in_axes=(1, 1, None, 1), out_axes=1
        )(*_rlax_inputs(r0)[:2], LAMBDA, _rlax_inputs(r0)[2])
        np.testing.assert_allclose(adv0, np.asarray(ref), rtol=1e-4, atol=1e-4)


def _group(cfg, t: int, b: int) -> list:
    params = {"T": t, "B": b}
    r = rollout(t, b)
    from jaxbuf.returns import gae

    rlax, why_rlax = peers.module("rlax")
    ts, why_ts = peers.module("tianshou.data")
    out: list = []
    ts_call, ts_adv = _tianshou_setup(r) if ts is not None else (None, None)
    _check(gae, rlax, r, ts_adv)
    out += _jaxbuf_cases(gae, r, params, cfg)
    out += (
        _rlax_cases(rlax, r, params, cfg)
        if rlax is not None
        else [unavailable("gae/call", params, "rlax", UNIT, why_rlax)]
    )
    if ts_call is None:
        out.append(unavailable("gae/call", params, "tianshou", UNIT, why_ts))
    else:
        out.append(
            Case("gae/call", params, "tianshou", loop_calls(ts_call, cfg.calls), cfg.calls, UNIT)
        )
    return out


def groups(cfg):
    """One group per rollout shape."""
    for t, b in cfg.gae_shapes:
        yield _group(cfg, t, b)
