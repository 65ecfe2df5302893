"""Synthetic transitions and filled buffers shared by the workloads.

Issue 7's transition: ``obs f32[17], act f32[6], rew f32, terminated, truncated`` from 64
environments; the Atari-like one has ``obs uint8[84, 84]`` (arriving as stacks of 4 frames
with ``save_only_last_obs``) and an int32 action. Step ``t`` of env ``e`` is a deterministic
function of ``(t, e)``, so every library stores the same data: env ``e`` terminates when
``(31 t + 17 e) mod 200 == 0`` (episodes of 200 steps, staggered across envs) and is
truncated when ``(13 t + 7 e) mod 1000 == 0``.

Buffers are filled through each library's own ``add`` inside one jitted ``lax.scan`` (jaxbuf,
flashbax). Tianshou's arrays are written directly and its counters set to "full", because a
Python loop of ``capacity / 64`` adds would dominate the run (its add is timed separately).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

N_ENV = 64
OBS_DIM, ACT_DIM = 17, 6
FRAME = (84, 84)
STACK = 4


# ---------------------------------------------------------------- transitions
def example() -> dict:
    """One MuJoCo-like transition (no batch axis)."""
    return {
        "obs": jnp.zeros((OBS_DIM,), jnp.float32),
        "act": jnp.zeros((ACT_DIM,), jnp.float32),
        "rew": jnp.zeros((), jnp.float32),
        "terminated": jnp.zeros((), bool),
        "truncated": jnp.zeros((), bool),
    }


def atari_example(stacked: bool = True) -> dict:
    """One Atari-like transition; ``obs`` is ``uint8[4, 84, 84]`` if ``stacked``."""
    shape = (STACK, *FRAME) if stacked else FRAME
    return {
        "obs": jnp.zeros(shape, jnp.uint8),
        "act": jnp.zeros((), jnp.int32),
        "rew": jnp.zeros((), jnp.float32),
        "terminated": jnp.zeros((), bool),
        "truncated": jnp.zeros((), bool),
    }


def _flags(t, e):
    terminated = (31 * t + 17 * e) % 200 == 0
    truncated = (13 * t + 7 * e) % 1000 == 0
    return terminated, truncated & ~terminated


def step(t: jax.Array, n_env: int = N_ENV) -> dict:
    """Step ``t`` (traced int32) of ``n_env`` envs, MuJoCo-like, batch axis first."""
    e = jnp.arange(n_env, dtype=jnp.int32)
    base = (t + e).astype(jnp.float32) * 1e-3
    terminated, truncated = _flags(t, e)
    return {
        "obs": base[:, None] + jnp.arange(OBS_DIM, dtype=jnp.float32),
        "act": base[:, None] - jnp.arange(ACT_DIM, dtype=jnp.float32),
        "rew": jnp.sin(base),
        "terminated": terminated,
        "truncated": truncated,
    }


def atari_step(t: jax.Array, n_env: int = N_ENV, stacked: bool = True) -> dict:
    """Step ``t`` of ``n_env`` envs, Atari-like; ``obs`` ``uint8[n, 4, 84, 84]`` if stacked."""
    e = jnp.arange(n_env, dtype=jnp.int32)
    pix = jnp.arange(FRAME[0] * FRAME[1], dtype=jnp.int32).reshape(FRAME)
    frame = ((pix[None] + (t + e)[:, None, None]) % 251).astype(jnp.uint8)
    obs = jnp.broadcast_to(frame[:, None], (n_env, STACK, *FRAME)) if stacked else frame
    terminated, truncated = _flags(t, e)
    return {
        "obs": obs,
        "act": (t + e) % 18,
        "rew": ((t + e) % 3).astype(jnp.float32),
        "terminated": terminated,
        "truncated": truncated,
    }


def first(batch_fn, *args) -> dict:
    """Step 0 of ``batch_fn`` as concrete device arrays."""
    return jax.jit(batch_fn, static_argnums=tuple(range(1, 1 + len(args))))(jnp.int32(0), *args)


def numpy_layout(capacity: int, n_env: int = N_ENV) -> dict:
    """MuJoCo-like data of a full Tianshou vector buffer: global slot ``e*m + t``."""
    m = capacity // n_env
    t = np.tile(np.arange(m, dtype=np.int64), n_env)
    e = np.repeat(np.arange(n_env, dtype=np.int64), m)
    base = ((t + e) * 1e-3).astype(np.float32)
    terminated, truncated = _flags(t, e)
    return {
        "obs": base[:, None] + np.arange(OBS_DIM, dtype=np.float32),
        "act": base[:, None] - np.arange(ACT_DIM, dtype=np.float32),
        "rew": np.sin(base),
        "terminated": terminated,
        "truncated": truncated,
    }


def numpy_atari_layout(capacity: int, n_env: int = N_ENV) -> dict:
    """Atari-like data of a full Tianshou vector buffer (last frames only)."""
    m = capacity // n_env
    t = np.tile(np.arange(m, dtype=np.int64), n_env)
    e = np.repeat(np.arange(n_env, dtype=np.int64), m)
    pix = np.arange(FRAME[0] * FRAME[1], dtype=np.int64).reshape(FRAME)
    obs = np.empty((capacity, *FRAME), np.uint8)
    for lo in range(0, capacity, 4096):  # chunked to bound the int64 temporary
        hi = min(lo + 4096, capacity)
        obs[lo:hi] = (pix[None] + (t + e)[lo:hi, None, None]) % 251
    terminated, truncated = _flags(t, e)
    return {
        "obs": obs,
        "act": ((t + e) % 18).astype(np.int32),
        "rew": ((t + e) % 3).astype(np.float32),
        "terminated": terminated,
        "truncated": truncated,
    }


# ---------------------------------------------------------------- jaxbuf / flashbax fill
def fill_by_scan(add, state, batch_fn, steps: int, *batch_args):
    """Apply ``add(state, batch_fn(t, *batch_args))`` for ``t < steps`` in one jitted scan."""

    def run(state):
        def body(s, t):
            return add(s, batch_fn(t, *batch_args)), None

        return lax.scan(body, state, jnp.arange(steps, dtype=jnp.int32))[0]

    out = jax.jit(run, donate_argnums=0)(state)
    return jax.block_until_ready(out)


# ---------------------------------------------------------------- tianshou
def tianshou_batch(batch: dict):
    """A Tianshou ``Batch`` of numpy arrays from a dict of (device) arrays."""
    from tianshou.data import Batch

    return Batch(**{k: np.asarray(v) for k, v in batch.items()})


def fill_tianshou(buf, layout: dict, first_batch: dict, weight: float | None = None):
    """Make a Tianshou vector buffer full with ``layout`` (global slots ``e*m + t``).

    One real ``add`` allocates the arrays (Tianshou allocates lazily, with its own dtype
    choices); then the arrays are overwritten in place (the sub-buffers hold views of them)
    and every sub-buffer's counters are set as after ``m`` adds. With ``weight`` (prioritized
    buffers) every leaf of the sum tree is set to it.
    """
    buf.add(tianshou_batch(first_batch))
    meta = buf._meta
    for key, value in layout.items():
        meta[key][:] = value
    meta["done"][:] = layout["terminated"] | layout["truncated"]
    m = buf.buffers[0].maxsize
    for sub in buf.buffers:
        sub._size, sub._insertion_idx = m, 0
        sub.last_index[0] = m - 1
    buf._lengths[:] = m
    buf.last_index[:] = buf._offset + m - 1
    if weight is not None:
        buf.weight[np.arange(buf.maxsize)] = weight
    assert len(buf) == buf.maxsize
    return buf


def nbytes(tree) -> int:
    """Total bytes of every array leaf of ``tree``."""
    return int(sum(x.nbytes for x in jax.tree_util.tree_leaves(tree)))
