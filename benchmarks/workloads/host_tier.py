"""Host-memory storage tier against the device tier: sample, add and a prefetched step.

The Atari-like buffer of the ``stacked`` workload (64 envs, ``uint8[84, 84]`` frames stored
once with ``save_only_last_obs``, read as stacks of 4, ``ignore_obs_next``), created twice:
storage in device memory (``jaxbuf[device]``) and in pinned host memory
(``jaxbuf[pinned_host]``). Both are filled by the same scan of adds and timed

* ``host_tier/sample``: one jitted ``sample`` per call (batch 256 by default);
* ``host_tier/add``: one jitted, donated ``add`` of one step of the 64 envs per call;
* ``host_tier/step``: a jitted step of ``sample`` + a stand-in update (a matmul on the
  batch), plain and double-buffered (``jaxbuf.double_buffered``: the next batch is drawn
  beside the update), so the table shows how much of the sample the overlap hides.

On CPU "host" and "device" memory are the same RAM, so the gap between the tiers is the
bookkeeping of memory spaces (the extra copies and the host-computation boundary), not a
PCIe transfer; on a GPU (``benchmarks/gpu.sh``) it includes the copy of the batch over the
bus. The bytes a sample moves are reported beside the times.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from benchmarks import data
from benchmarks.harness import Case, Result, compile_jit
from benchmarks.workloads.add import jaxbuf_add
from benchmarks.workloads.common import loop_calls

UNIT = "us per call"
TIERS = {"jaxbuf[device]": None, "jaxbuf[pinned_host]": "pinned_host"}


def _buffer(capacity: int, kind):
    import jaxbuf

    return jaxbuf.VectorReplayBuffer.create(
        data.atari_example(),
        capacity,
        data.N_ENV,
        stack_num=data.STACK,
        ignore_obs_next=True,
        save_only_last_obs=True,
        storage_memory_kind=kind,
    )


def _update(batch):
    """A stand-in learner step that reads the whole batch (so no gather is optimised away):
    the frames of ``obs`` and ``obs_next`` summed, then a [B, 7056] x [7056, 64] matmul."""
    frames = jnp.concatenate([batch["obs"], batch["obs_next"]], axis=1).astype(jnp.float32)
    x = frames.sum(axis=1).reshape(frames.shape[0], -1)
    w = jnp.ones((x.shape[1], 64), jnp.float32) / x.shape[1]
    extra = batch["rew"].sum() + batch["act"].sum() + batch["done"].sum()
    return jnp.tanh(x @ w).sum() + extra


def _cases(lib: str, buf, cfg, bs: int) -> list[Case]:
    import jaxbuf

    key = jax.random.key(1)
    params = {"capacity": buf.maxsize, "batch": bs}
    calls = max(1, cfg.calls // 4)
    sample_c, sample_t = compile_jit(lambda b, k: b.sample(k, bs), buf, key)
    step_rows = data.atari_step(jnp.int32(3))

    def sample(b, k):
        return b.sample(k, bs)[0]

    def plain(b, k):
        return _update(sample(b, k))

    def update(b, batch):
        return b, _update(batch)

    buffered = jaxbuf.double_buffered(update, sample)
    plain_c, plain_t = compile_jit(plain, buf, key)
    first = sample(buf, key)
    buf_c, buf_t = compile_jit(buffered, buf, first, key)
    state = {"buf": jax.block_until_ready(jax.tree.map(jnp.copy, buf))}
    add_c, add_t = compile_jit(jaxbuf_add, state["buf"], step_rows, donate_argnums=(0,))

    def add_once():
        state["buf"] = add_c(state["buf"], step_rows)
        return state["buf"].counters

    carry = {"batch": first}

    def buffered_once():
        _, carry["batch"], out = buf_c(buf, carry["batch"], key)
        return out

    return [
        Case("host_tier/sample", params, lib, loop_calls(lambda: sample_c(buf, key), calls),
             calls, UNIT, sample_t),
        Case("host_tier/add", {"capacity": buf.maxsize, "rows": data.N_ENV}, lib,
             loop_calls(add_once, calls), calls, UNIT, add_t),
        Case("host_tier/step", params, lib, loop_calls(lambda: plain_c(buf, key), calls),
             calls, UNIT, plain_t),
        Case("host_tier/step", params, lib + "+double_buffered", loop_calls(buffered_once, calls),
             calls, UNIT, buf_t),
    ]  # fmt: skip


def _bytes_per_sample(buf, bs: int) -> Result:
    """Bytes of one sampled batch, as it reaches the device (every field, frames stacked)."""
    batch = jax.eval_shape(lambda b: b.sample(jax.random.key(0), bs)[0], buf)
    moved = sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(batch))
    return Result(
        "host_tier/bytes", {"capacity": buf.maxsize, "batch": bs}, "jaxbuf", "bytes per sample",
        float(moved), status="ok",
    )  # fmt: skip


def groups(cfg):
    """One group: both tiers at the stacked workload's capacity and the first batch size."""
    cap, bs = cfg.stack_capacity, cfg.batch_size
    out: list = []
    for lib, kind in TIERS.items():
        buf = data.fill_by_scan(jaxbuf_add, _buffer(cap, kind), data.atari_step, cap // data.N_ENV)
        out += _cases(lib, buf, cfg, bs)
    out.append(_bytes_per_sample(buf, bs))
    yield out
