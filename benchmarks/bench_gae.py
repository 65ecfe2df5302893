"""Benchmark: GAE over [T, B] rollouts -- jaxbuf (scan, associative scan) vs rlax vs Tianshou.

Usage::

    PYTHONPATH=. python benchmarks/bench_gae.py [--quick] [--shapes 128x64,2048x8]

Contenders, all computing advantages *and* returns (= advantages + values) of one rollout:

* ``jaxbuf-scan``    ``jaxbuf.returns.gae`` (reverse ``lax.scan``), jitted;
* ``jaxbuf-assoc``   ``jaxbuf.returns.gae(..., use_associative_scan=True)``, jitted;
* ``rlax-vmap``      ``jax.vmap(rlax.truncated_generalized_advantage_estimation)`` over B,
  jitted, with ``discount = gamma * (1 - terminated)`` computed inside;
* ``tianshou-numba`` Tianshou 2.0.1's ``_gae`` numba kernel on the same data flattened env by
  env (its layout), given already masked next values and end flags (the preparation done by
  ``compute_episodic_return`` is not timed), plus the ``+ values``; only if ``tianshou`` imports;
* ``jax-floor``      a jitted function with the same inputs doing two elementwise ops: the cost
  of calling any jitted function on these arrays, for reading the others.

Compile time (trace + XLA compile, or the numba JIT of the first call; numba caches it across
shapes) is reported separately from run time. Run time per call: each repetition times
``--number`` blocking calls of every contender in turn (interleaved, so load changes hit all
alike); the table gives the median and the minimum over ``--repeats`` repetitions. Throughput
is T*B transitions per second at the median. ``vs rlax`` is the median over repetitions of
rlax's time divided by the contender's time in the same repetition (paired, so it is robust
to load drift; > 1 means faster than rlax). All contenders are checked to agree first.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from jaxbuf.returns import gae

GAMMA, LAMBDA = 0.99, 0.95


@dataclass
class Contender:
    name: str
    compile_s: float
    call: Callable[[], object]
    advantages: np.ndarray  # [T, B], for the agreement check


def make_rollout(steps: int, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "rewards": rng.normal(size=(steps, batch)).astype(np.float32),
        "values": rng.normal(size=(steps + 1, batch)).astype(np.float32),  # V(s_0..s_T)
        "terminated": rng.random((steps, batch)) < 0.02,
        "truncated": np.zeros((steps, batch), bool),  # rlax cannot express truncation
    }


def jax_contender(name: str, fn: Callable, *args) -> Contender:
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - start
    advantages = np.asarray(jax.block_until_ready(compiled(*args))[0])
    return Contender(name, compile_s, lambda: compiled(*args), advantages)


def jax_contenders(data: dict[str, np.ndarray]) -> list[Contender]:
    r, v, term, trunc = (
        jnp.asarray(data[k]) for k in ("rewards", "values", "terminated", "truncated")
    )
    out = [
        jax_contender(
            "jaxbuf-scan",
            lambda r, v, t, u: gae(r, v[:-1], v[1:], t, u, GAMMA, LAMBDA),
            r,
            v,
            term,
            trunc,
        ),
        jax_contender(
            "jaxbuf-assoc",
            lambda r, v, t, u: gae(
                r, v[:-1], v[1:], t, u, GAMMA, LAMBDA, use_associative_scan=True
            ),
            r,
            v,
            term,
            trunc,
        ),
    ]
    try:
        import rlax
    except ImportError:
        print("rlax not installed (pip install rlax): no rlax row")
    else:
        batched = jax.vmap(
            rlax.truncated_generalized_advantage_estimation, in_axes=(1, 1, None, 1), out_axes=1
        )

        def rlax_gae(r, v, t):
            adv = batched(r, GAMMA * (1.0 - t.astype(r.dtype)), LAMBDA, v)
            return adv, adv + v[:-1]

        out.append(jax_contender("rlax-vmap", rlax_gae, r, v, term))
    floor = jax_contender(
        "jax-floor", lambda r, v, t, u: (r - v[:-1], r + v[1:]), r, v, term, trunc
    )
    floor.advantages = None  # computes no advantages
    out.append(floor)
    return out


def tianshou_contender(data: dict[str, np.ndarray]) -> Contender | None:
    try:
        from tianshou.algorithm.algorithm_base import _gae
    except ImportError as err:
        print(f"tianshou not importable ({err}): no tianshou row")
        return None
    steps, batch = data["rewards"].shape
    terminated = data["terminated"].T.reshape(-1)
    v_s = data["values"][:-1].T.reshape(-1)
    v_s_ = data["values"][1:].T.reshape(-1) * ~terminated
    rew = data["rewards"].T.reshape(-1)
    end = (data["terminated"] | data["truncated"]).T.copy()
    end[:, -1] = True  # each env's last step ends its recursion
    end = end.reshape(-1)

    def call():
        adv = _gae(v_s, v_s_, rew, end, GAMMA, LAMBDA)
        return adv, adv + v_s

    start = time.perf_counter()
    adv, _ = call()
    compile_s = time.perf_counter() - start
    return Contender("tianshou-numba", compile_s, call, adv.reshape(batch, steps).T)


def run_shape(steps: int, batch: int, repeats: int, number: int) -> None:
    data = make_rollout(steps, batch)
    contenders = jax_contenders(data)
    tianshou = tianshou_contender(data)
    if tianshou is not None:
        contenders.append(tianshou)
    reference = contenders[0].advantages
    for c in contenders:
        if c.advantages is not None:
            np.testing.assert_allclose(
                c.advantages, reference, rtol=1e-4, atol=1e-4, err_msg=c.name
            )

    samples = time_interleaved({c.name: c.call for c in contenders}, repeats, number)
    median = {name: statistics.median(s) for name, s in samples.items()}
    rlax = samples.get("rlax-vmap")
    print(f"\nGAE on [T={steps}, B={batch}] ({steps * batch} transitions), float32")
    print(
        f"{'impl':<16}{'compile ms':>11}{'median us':>11}{'min us':>9}"
        f"{'Mtrans/s':>10}{'vs rlax':>9}"
    )
    for c in contenders:
        if rlax:
            paired = [base / own for base, own in zip(rlax, samples[c.name])]
            ratio = f"{statistics.median(paired):.2f}x"
        else:
            ratio = "-"
        print(
            f"{c.name:<16}{c.compile_s * 1e3:>11.1f}{median[c.name] * 1e6:>11.1f}"
            f"{min(samples[c.name]) * 1e6:>9.1f}"
            f"{steps * batch / median[c.name] / 1e6:>10.1f}{ratio:>9}"
        )


def time_interleaved(
    calls: dict[str, Callable[[], object]], repeats: int, number: int
) -> dict[str, list[float]]:
    """Seconds per call, one sample per repetition and contender (interleaved)."""
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            for _ in range(number):
                jax.block_until_ready(call())
            samples[name].append((time.perf_counter() - start) / number)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few repetitions (smoke run)")
    parser.add_argument("--shapes", default="128x64,2048x8", help="TxB list, comma separated")
    parser.add_argument("--repeats", type=int, default=None, help="default 31 (--quick: 3)")
    parser.add_argument("--number", type=int, default=None, help="default 50 (--quick: 5)")
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 31)
    number = args.number or (5 if args.quick else 50)

    device = jax.devices()[0]
    print(f"jax {jax.__version__}, device {device.platform}: {device.device_kind}")
    print(f"cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.2f} at start")
    print(f"run time: {repeats} interleaved repetitions x {number} calls")
    for shape in args.shapes.split(","):
        steps, batch = (int(x) for x in shape.lower().split("x"))
        run_shape(steps, batch, repeats, number)
    print(f"\nload average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
