"""The bare sum tree: sample a batch of leaves proportionally, then set those leaves.

``jaxbuf.SumTree.create(N)`` with every leaf at 1.0; one operation = ``tree.sample(key, B)``
then ``tree.set(idx, new priorities)``, per jitted call (tree donated) and per step of a
jitted scan. The note of each row lists the compiled program's operations, other than
in-place scatters and loop plumbing, whose result is as large as the leaves or the widest
level of rows: an O(N) step (a copy or a reduction of the tree) would show up there, and as
time growing with N.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp

from benchmarks.harness import Case, compile_jit
from benchmarks.workloads.common import Cell, loop_calls, scan_steps

UNIT = "us per sample + set"
# HLO opcodes that may carry the whole tree legitimately.
_PLUMBING = {"parameter", "scatter", "fusion", "while", "tuple", "get-tuple-element", "bitcast"}


def big_ops(hlo: str, shapes: list[str]) -> list[str]:
    """Opcodes in ``hlo`` (outside ``_PLUMBING``) producing an array of one of ``shapes``."""
    dims = "|".join(re.escape(s) for s in shapes)
    pattern = re.compile(rf"=\s*\(?[a-z0-9]+\[(?:{dims})\]\S*\s+([a-z\-]+)\(")
    found = (pattern.search(line) for line in hlo.splitlines())
    return sorted({m.group(1) for m in found if m and m.group(1) not in _PLUMBING})


def _step(batch: int):
    def step(tree, key):
        k_sample, k_prio = jax.random.split(key)
        idx = tree.sample(k_sample, batch)
        prio = jax.random.uniform(k_prio, (batch,), minval=0.1, maxval=2.0)
        return tree.set(idx, prio)

    return step


def _group(cfg, n: int, batch: int) -> list[Case]:
    import jaxbuf

    params = {"capacity": n, "batch": batch}
    tree = jaxbuf.SumTree.create(n).set(jnp.arange(n), jnp.ones(n))
    shapes = [str(tree.bound), ",".join(map(str, tree.levels[-1].shape))]
    step = _step(batch)
    keys = jax.random.split(jax.random.key(0), cfg.scan_steps)
    key = jax.random.key(1)
    call_c, call_t = compile_jit(step, tree, key, donate_argnums=(0,))
    note = "N-sized non-in-place ops: " + (", ".join(big_ops(call_c.as_text(), shapes)) or "none")
    cell = Cell(tree)
    scan_c, scan_t = compile_jit(scan_steps(step, 0), cell.value, keys, donate_argnums=(0,))

    def call():
        cell.value = call_c(cell.value, key)
        return cell.value

    def scan_chunk():
        cell.value = scan_c(cell.value, keys)
        return jax.block_until_ready(cell.value)

    return [
        Case(
            "sum_tree/call",
            params,
            "jaxbuf",
            loop_calls(call, cfg.calls),
            cfg.calls,
            UNIT,
            call_t,
            note,
        ),
        Case("sum_tree/scan", params, "jaxbuf", scan_chunk, cfg.scan_steps, UNIT, scan_t, note),
    ]


def groups(cfg):
    """One group per capacity, at the first batch size."""
    for n in cfg.sum_tree_capacities:
        yield _group(cfg, n, cfg.batch_size)
