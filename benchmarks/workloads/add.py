"""Add one step of 64 envs, in a jitted ``lax.scan`` and per jitted call.

jaxbuf ``VectorReplayBuffer(capacity, 64, ignore_obs_next=True, lockstep=True)`` (one ``obs``
per step, like flashbax's flat buffer, which pairs consecutive steps; ``lockstep``: every add
carries all 64 envs, the same contract as flashbax's ``add_batch_size``), the same without
``lockstep`` as ``jaxbuf[routed]`` (the general path that accepts any ``buffer_ids``),
flashbax ``make_flat_buffer(capacity, add_batch_size=64)`` and Tianshou
``VectorReplayBuffer(capacity, 64, ignore_obs_next=True)``.
Scan: the state is the carry of one jitted scan over pre-built steps, donated to the call.
Per call: ``jax.jit(add, donate_argnums=0)`` called from Python, same batch every call.
Tianshou has no scan; its per-call add is the reference for both.
"""

from __future__ import annotations

import jax

from benchmarks import data, peers
from benchmarks.harness import Case, compile_jit, unavailable
from benchmarks.workloads.common import Cell, loop_calls, scan_steps

UNIT = "us per add of 64 envs"


def jaxbuf_buffer(capacity: int, lockstep: bool = True):
    """An empty jaxbuf vector buffer for the MuJoCo-like transition."""
    import jaxbuf

    return jaxbuf.VectorReplayBuffer.create(
        data.example(), capacity, data.N_ENV, ignore_obs_next=True, lockstep=lockstep
    )


def jaxbuf_add(buf, batch):
    """jaxbuf's add, keeping the new buffer (the episode statistics are dropped)."""
    return buf.add(batch)[0]


def flashbax_buffer(fbx, capacity: int, batch_size: int):
    """flashbax's flat buffer and an empty state for the MuJoCo-like transition."""
    fb = fbx.make_flat_buffer(
        max_length=capacity,
        min_length=data.N_ENV,  # only gates can_sample; a batch may exceed a small buffer
        sample_batch_size=batch_size,
        add_batch_size=data.N_ENV,
    )
    return fb, fb.init(data.example())


def tianshou_buffer(capacity: int, **kw):
    """An empty Tianshou vector buffer."""
    from tianshou.data import VectorReplayBuffer

    return VectorReplayBuffer(capacity, data.N_ENV, ignore_obs_next=True, **kw)


def _jax_cases(lib: str, add_fn, state, cfg, capacity: int) -> list[Case]:
    params = {"capacity": capacity}
    xs = jax.vmap(data.step)(jax.numpy.arange(cfg.scan_steps, dtype=jax.numpy.int32))
    x0 = jax.tree_util.tree_map(lambda x: x[0], xs)
    cell = Cell(state)
    scan_c, scan_t = compile_jit(scan_steps(add_fn, cfg.scan_steps), state, xs, donate_argnums=(0,))
    call_c, call_t = compile_jit(add_fn, state, x0, donate_argnums=(0,))

    def scan_chunk():
        cell.value = scan_c(cell.value, xs)
        return jax.block_until_ready(cell.value)

    def call():
        cell.value = call_c(cell.value, x0)
        return cell.value

    return [
        Case("add/scan", params, lib, scan_chunk, cfg.scan_steps, UNIT, scan_t),
        Case("add/call", params, lib, loop_calls(call, cfg.calls), cfg.calls, UNIT, call_t),
    ]


def _group(cfg, capacity: int) -> list:
    out: list = []
    out += _jax_cases("jaxbuf", jaxbuf_add, jaxbuf_buffer(capacity), cfg, capacity)
    routed = jaxbuf_buffer(capacity, lockstep=False)
    out += _jax_cases("jaxbuf[routed]", jaxbuf_add, routed, cfg, capacity)
    fbx, why = peers.module("flashbax")
    if fbx is None:
        out += [
            unavailable(w, {"capacity": capacity}, "flashbax", UNIT, why)
            for w in ("add/scan", "add/call")
        ]
    else:
        fb, state = flashbax_buffer(fbx, capacity, cfg.batch_size)
        out += _jax_cases("flashbax", fb.add, state, cfg, capacity)
    ts, why = peers.module("tianshou.data")
    if ts is None:
        out.append(unavailable("add/call", {"capacity": capacity}, "tianshou", UNIT, why))
    else:
        buf = tianshou_buffer(capacity)
        batch = data.tianshou_batch(data.first(data.step))
        calls = max(1, cfg.calls // 4)
        out.append(
            Case(
                "add/call",
                {"capacity": capacity},
                "tianshou",
                loop_calls(lambda: buf.add(batch), calls),
                calls,
                UNIT,
            )
        )
    return out


def groups(cfg):
    """One group per capacity."""
    for capacity in cfg.capacities:
        yield _group(cfg, capacity)
