"""Where a per-call GAE goes: jaxbuf vs rlax, split into call interface and computation.

Usage::

    PYTHONPATH=. python benchmarks/gae_breakdown.py [--reps 15] [--shapes 128x64,2048x8]

Per-call rows use the timing of ``python -m benchmarks.run`` (a compiled function called 200
times from Python, then one block; alternating rounds, medians of wall and process CPU time):

* ``jaxbuf 5in/2out``       ``jaxbuf.returns.gae`` as the suite runs it;
* ``jaxbuf 5in/1out``       the same, advantages only (one output buffer fewer);
* ``jaxbuf loop 3in/1out``  jaxbuf's recurrence (coefficients first, one multiply-add per
  step) on rlax's inputs ``(r, discount, values[T+1])``, advantages only: rlax's interface;
* ``rlax 3in/1out``         ``vmap(rlax.truncated_generalized_advantage_estimation)``;
* ``floor ...``             a function with those inputs and outputs and almost no work:
  ``inline`` is cheap enough for XLA:CPU to run it on the calling thread, ``async`` does one
  full-size multiply, so XLA:CPU hands it to its thread pool, as it does every GAE here.

XLA:CPU runs an executable on the calling thread only when its flop estimate (a while body
counted once) is below 1000, and compiles a while loop into a single kernel only when one
iteration touches under 1 kB; both facts are printed per row (``flops``, ``hoisted``).
The in-jit rows time 200 GAE calls inside one ``lax.scan`` (each feeding the next), with
rlax's returns computed as ``advantages + values`` like jaxbuf's.
"""

from __future__ import annotations

import argparse
import os

import jax
import jax.numpy as jnp

from benchmarks.harness import Case, compile_jit, measure
from benchmarks.workloads.common import loop_calls
from benchmarks.workloads.gae import GAMMA, LAMBDA, _rlax_inputs, rollout
from jaxbuf.returns import gae

CALLS, IN_JIT = 200, 200
NAMES = ("rewards", "values", "next_values", "terminated", "truncated")


def _rlax(r, discount, values):
    import rlax

    fn = jax.vmap(
        rlax.truncated_generalized_advantage_estimation, in_axes=(1, 1, None, 1), out_axes=1
    )
    return fn(r, discount, LAMBDA, values)


def _jaxbuf_loop(r, discount, values):
    """jaxbuf's scan (coefficient arrays first, then x_t = b_t + a_t x_{t+1})."""
    a = discount * LAMBDA
    b = r + discount * values[1:] - values[:-1]

    def step(x, ab):
        x = ab[1] + ab[0] * x
        return x, x

    return jax.lax.scan(step, jnp.zeros_like(r[0]), (a, b), reverse=True)[1]


def _facts(compiled) -> str:
    text = compiled.as_text()
    flops = compiled.cost_analysis().get("flops", float("nan"))
    hoisted = "xla_cpu_small_call" in text
    return f"flops {flops:8.0f}  while loops {text.count(' while(')}  hoisted {hoisted}"


def per_call(t: int, b: int, reps: int) -> None:
    r = rollout(t, b)
    five = tuple(jnp.asarray(r[k]) for k in NAMES)
    three = _rlax_inputs(r)
    rows = [
        ("jaxbuf 5in/2out", lambda *a: gae(*a, GAMMA, LAMBDA), five),
        ("jaxbuf 5in/1out", lambda *a: gae(*a, GAMMA, LAMBDA)[0], five),
        ("jaxbuf loop 3in/1out", _jaxbuf_loop, three),
        ("rlax 3in/1out", _rlax, three),
        ("floor inline 5in/2out", lambda r, v, *_: (r[:1, :1] * 2, v[:1, :1] * 3), five),
        ("floor inline 3in/1out", lambda r, *_: r[:1, :1] * 2, three),
        ("floor async 5in/2out", lambda r, v, *_: (r * 2, v[:1, :1] * 3), five),
        ("floor async 3in/1out", lambda r, *_: r * 2, three),
    ]
    cases = []
    print(f"\n[T={t}, B={b}] per call from Python")
    for name, fn, args in rows:
        compiled, _ = compile_jit(fn, *args)
        print(f"  {name:24s} {_facts(compiled)}")
        cases.append(
            Case("gae", {}, name, loop_calls(lambda c=compiled, a=args: c(*a), CALLS), CALLS, "us")
        )
    for res in measure(cases, reps, 0.1):
        print(f"  {res.lib:24s} wall {res.value * 1e6:6.2f} us  cpu {res.cpu * 1e6:6.2f} us")


def in_jit(t: int, b: int, reps: int) -> None:
    r = rollout(t, b)
    five = tuple(jnp.asarray(r[k]) for k in NAMES)
    three = _rlax_inputs(r)

    def chained(fn):
        def run(x, *rest):
            def body(x, _):
                adv, ret = fn(x, *rest)
                return 1e-3 * (adv + ret), None

            return jax.lax.scan(body, x, None, length=IN_JIT)[0]

        return run

    def rlax_pair(x, discount, values):
        adv = _rlax(x, discount, values)
        return adv, adv + values[:-1]

    cases = []
    for name, fn, args in (
        ("jaxbuf", lambda *a: gae(*a, GAMMA, LAMBDA), five),
        ("rlax (+ returns)", rlax_pair, three),
    ):
        compiled, _ = compile_jit(chained(fn), *args)
        chunk = lambda c=compiled, a=args: jax.block_until_ready(c(*a))  # noqa: E731
        cases.append(Case("gae", {}, name, chunk, IN_JIT, "us"))
    print(f"[T={t}, B={b}] inside one jitted scan of {IN_JIT} GAE calls")
    for res in measure(cases, reps, 0.1):
        print(f"  {res.lib:24s} wall {res.value * 1e6:6.2f} us  cpu {res.cpu * 1e6:6.2f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--shapes", default="128x64,2048x8")
    args = parser.parse_args()
    print(f"jax {jax.__version__}, cpus {os.cpu_count()}, load {os.getloadavg()[0]:.2f}")
    for shape in args.shapes.split(","):
        t, b = (int(x) for x in shape.lower().split("x"))
        per_call(t, b, args.reps)
        in_jit(t, b, args.reps)
    print(f"load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
