"""Episode-aware reads: episode links and frame-stacked sampling.

* ``prev_next``: ``prev``/``next`` of 256 random indices of a full ``VectorReplayBuffer``
  (jaxbuf per jitted call and in a scan; Tianshou per call, numba kernels; flashbax has no
  episode links);
* ``stacked``: ``obs uint8[84, 84]``, ``stack_num=4``, ``ignore_obs_next`` and
  ``save_only_last_obs``, sample a batch (``obs`` and ``obs_next`` both ``[B, 4, 84, 84]``),
  jaxbuf per call and in a scan, Tianshou per call. flashbax has no frame stacking; its row
  stores the 4-frame stack ``uint8[4, 84, 84]`` with every step (4x the memory, stacks may
  cross episode ends) and samples its flat buffer, which returns ``first`` and ``second``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import data, peers
from benchmarks.harness import Case, compile_jit, unavailable
from benchmarks.workloads.add import jaxbuf_add, jaxbuf_buffer, tianshou_buffer
from benchmarks.workloads.common import loop_calls, read_scan

LINK_UNIT = "us per prev+next of 256"
STACK_UNIT = "us per stacked sample"
NO_EPISODES = "flashbax has no episode boundaries (no prev/next)"


def prev_next(buf, idx):
    """Both links of ``idx``."""
    return buf.prev(idx), buf.next(idx)


def _links(cfg) -> list:
    cap = cfg.episode_capacity
    params = {"capacity": cap, "indices": 256}
    rng = np.random.default_rng(0)
    idx_rows = jnp.asarray(rng.integers(0, cap, (cfg.scan_steps, 256)), jnp.int32)
    idx = idx_rows[0]
    buf = data.fill_by_scan(jaxbuf_add, jaxbuf_buffer(cap), data.step, cap // data.N_ENV)
    call_c, call_t = compile_jit(prev_next, buf, idx)
    scan_c, scan_t = compile_jit(read_scan(prev_next), buf, idx_rows)
    out: list = [
        Case(
            "prev_next/call",
            params,
            "jaxbuf",
            loop_calls(lambda: call_c(buf, idx), cfg.calls),
            cfg.calls,
            LINK_UNIT,
            call_t,
        ),
        Case(
            "prev_next/scan",
            params,
            "jaxbuf",
            lambda: jax.block_until_ready(scan_c(buf, idx_rows)),
            cfg.scan_steps,
            LINK_UNIT,
            scan_t,
        ),
        unavailable("prev_next/call", params, "flashbax", LINK_UNIT, NO_EPISODES),
    ]
    ts, why = peers.module("tianshou.data")
    if ts is None:
        out.append(unavailable("prev_next/call", params, "tianshou", LINK_UNIT, why))
    else:
        tbuf = data.fill_tianshou(
            tianshou_buffer(cap), data.numpy_layout(cap), data.first(data.step)
        )
        nidx = np.asarray(idx, np.int64)
        assert np.array_equal(tbuf.prev(nidx), np.asarray(buf.prev(idx)))
        assert np.array_equal(tbuf.next(nidx), np.asarray(buf.next(idx)))
        out.append(
            Case(
                "prev_next/call",
                params,
                "tianshou",
                loop_calls(lambda: (tbuf.prev(nidx), tbuf.next(nidx)), cfg.calls),
                cfg.calls,
                LINK_UNIT,
            )
        )
    return out


def stacked_buffer(capacity: int):
    """jaxbuf Atari-like buffer: stack 4, ``ignore_obs_next``, ``save_only_last_obs``."""
    import jaxbuf

    return jaxbuf.VectorReplayBuffer.create(
        data.atari_example(),
        capacity,
        data.N_ENV,
        stack_num=data.STACK,
        ignore_obs_next=True,
        save_only_last_obs=True,
    )


def _stacked(cfg, bs: int) -> list:
    cap = cfg.stack_capacity
    params = {"capacity": cap, "stack": data.STACK, "batch": bs}
    buf = data.fill_by_scan(jaxbuf_add, stacked_buffer(cap), data.atari_step, cap // data.N_ENV)
    steps = max(10, cfg.scan_steps // 10)
    calls = max(1, cfg.calls // 4)
    out: list = _stack_cases("jaxbuf", lambda b, k: b.sample(k, bs), buf, params, steps, calls)
    del buf
    fbx, why = peers.module("flashbax")
    if fbx is None:
        out.append(unavailable("stacked_sample/call", params, "flashbax", STACK_UNIT, why))
    else:
        fb = fbx.make_flat_buffer(
            max_length=cap, min_length=data.N_ENV, sample_batch_size=bs, add_batch_size=data.N_ENV
        )
        state = data.fill_by_scan(
            fb.add, fb.init(data.atari_example()), data.atari_step, cap // data.N_ENV
        )
        out += _stack_cases("flashbax", fb.sample, state, params, steps, calls)
        del state
    ts, why = peers.module("tianshou.data")
    if ts is None:
        out.append(unavailable("stacked_sample/call", params, "tianshou", STACK_UNIT, why))
    else:
        tbuf = tianshou_buffer(cap, stack_num=data.STACK, save_only_last_obs=True)
        tbuf = data.fill_tianshou(tbuf, data.numpy_atari_layout(cap), data.first(data.atari_step))
        out.append(
            Case(
                "stacked_sample/call",
                params,
                "tianshou",
                loop_calls(lambda: tbuf.sample(bs), calls),
                calls,
                STACK_UNIT,
            )
        )
    return out


def _stack_cases(lib, sample, state, params, steps, calls) -> list[Case]:
    keys = jax.random.split(jax.random.key(0), steps)
    key = jax.random.key(1)
    call_c, call_t = compile_jit(sample, state, key)
    scan_c, scan_t = compile_jit(read_scan(sample), state, keys)
    return [
        Case(
            "stacked_sample/call",
            params,
            lib,
            loop_calls(lambda: call_c(state, key), calls),
            calls,
            STACK_UNIT,
            call_t,
        ),
        Case(
            "stacked_sample/scan",
            params,
            lib,
            lambda: jax.block_until_ready(scan_c(state, keys)),
            steps,
            STACK_UNIT,
            scan_t,
        ),
    ]


def check_stacking() -> None:
    """jaxbuf's stacked reads equal Tianshou's on the same data (when Tianshou is installed)."""
    ts, _ = peers.module("tianshou.data")
    if ts is None:
        return
    cap = 2**10
    buf = data.fill_by_scan(jaxbuf_add, stacked_buffer(cap), data.atari_step, cap // data.N_ENV)
    tbuf = tianshou_buffer(cap, stack_num=data.STACK, save_only_last_obs=True)
    tbuf = data.fill_tianshou(tbuf, data.numpy_atari_layout(cap), data.first(data.atari_step))
    idx = np.asarray(jax.random.randint(jax.random.key(1), (256,), 0, cap))
    ref, mine = tbuf[idx], buf[jnp.asarray(idx, jnp.int32)]
    assert np.array_equal(ref.obs, np.asarray(mine["obs"]))
    assert np.array_equal(ref.obs_next, np.asarray(mine["obs_next"]))


def prev_next_groups(cfg):
    """prev/next of 256 indices."""
    yield _links(cfg)


def stacked_groups(cfg):
    """Frame-stacked sampling, one group per batch size."""
    check_stacking()
    for bs in cfg.batch_sizes:
        yield _stacked(cfg, bs)
