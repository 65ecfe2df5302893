"""Bulk load: N transitions (obs f32[17], act f32[6]) written into an empty buffer at once.

* ``jaxbuf``: ``ReplayBuffer(N).extend(rows)``, one jitted call (episode bookkeeping for
  all rows vectorised, no loop over rows);
* ``jaxbuf[scan]``: the same rows as N single-row ``add`` calls inside one jitted
  ``lax.scan`` (what a user wrote before ``extend`` existed);
* ``flashbax``: ``make_item_buffer(N, add_sequences=True)`` and one ``add`` of the N rows
  (flashbax keeps no episode statistics, so it does less work per row).

Every call starts from the same empty buffer (not donated, so the output buffer is
allocated inside the timed call for every library). The rows are already on the device.
Episodes end where :mod:`benchmarks.data` says (about every 200 steps).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from benchmarks import data, peers
from benchmarks.harness import Case, compile_jit, unavailable

UNIT = "s per load"
FULL_N = 1_000_000
QUICK_N = 2**14


def transitions(n: int) -> dict:
    """n MuJoCo-like rows in time order, as one env stepping n times (leading axis n)."""
    t = jnp.arange(n, dtype=jnp.int32)
    steps = jax.vmap(lambda s: jax.tree_util.tree_map(lambda x: x[0], data.step(s, 1)))(t)
    return jax.block_until_ready(steps)


def _jaxbuf_cases(n: int, rows: dict) -> list[Case]:
    import jaxbuf

    empty = jaxbuf.ReplayBuffer.create(data.example(), n)
    params = {"rows": n}

    def extend(buf, rows):
        return buf.extend(rows)[0]

    def scan(buf, rows):
        return jax.lax.scan(lambda b, r: (b.add(r)[0], None), buf, rows)[0]

    ext_c, ext_t = compile_jit(extend, empty, rows)
    scan_c, scan_t = compile_jit(scan, empty, rows)
    return [
        Case(
            "extend",
            params,
            "jaxbuf",
            lambda: jax.block_until_ready(ext_c(empty, rows)),
            1,
            UNIT,
            ext_t,
        ),
        Case(
            "extend",
            params,
            "jaxbuf[scan]",
            lambda: jax.block_until_ready(scan_c(empty, rows)),
            1,
            UNIT,
            scan_t,
            note="N single-row adds in one jitted lax.scan",
        ),
    ]


def _flashbax_case(n: int, rows: dict) -> Case | object:
    fbx, why = peers.module("flashbax")
    if fbx is None:
        return unavailable("extend", {"rows": n}, "flashbax", UNIT, why)
    fb = fbx.make_item_buffer(max_length=n, min_length=1, sample_batch_size=1, add_sequences=True)
    state = fb.init(data.example())
    add_c, add_t = compile_jit(fb.add, state, rows)
    return Case(
        "extend",
        {"rows": n},
        "flashbax",
        lambda: jax.block_until_ready(add_c(state, rows)),
        1,
        UNIT,
        add_t,
        note="item buffer, add_sequences=True (no episode statistics)",
    )


def groups(cfg):
    """One group: the three ways to load the same rows."""
    n = QUICK_N if cfg.quick else FULL_N
    rows = transitions(n)
    yield _jaxbuf_cases(n, rows) + [_flashbax_case(n, rows)]
