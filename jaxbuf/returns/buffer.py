r"""Returns over buffer indices: GAE / Monte Carlo and n-step targets (Tianshou semantics).

These are the buffer counterparts of Tianshou's ``Algorithm.compute_episodic_return`` and
``Algorithm.compute_nstep_return`` (differences in docs/returns.md). Both follow the
buffer's own episode links: ``buf.next(i)`` (the next step of the same episode, ``i`` itself at
an episode end) and ``buf.is_episode_end(i)`` (``terminated | truncated``, or the unfinished
write head of a sub-buffer). So episodes end at ``terminated``, ``truncated``, the unfinished
head of each sub-buffer, and never cross sub-buffers or the physical end of the storage.

``indices`` entries that are negative are padding (the ``-1`` of ``buf.all_indices()``): they
get zero outputs and take no part in any recursion, so ``buf.all_indices()[0]`` can be passed
as is, with a static shape, under ``jit``.

All functions are traceable (``jit``, ``vmap``) and take the buffer as a pytree argument.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxbuf._core.segments import broadcast_rows
from jaxbuf.errors import InputError


def _check_indices(fn: str, indices: chex.Array, rank_one: bool) -> jax.Array:
    indices = jnp.asarray(indices)
    if not jnp.issubdtype(indices.dtype, jnp.integer):
        raise InputError(f"jaxbuf: {fn}: `indices` must be integers, got dtype {indices.dtype}")
    if rank_one and indices.ndim != 1:
        raise InputError(f"jaxbuf: {fn}: `indices` must have shape [I], got {indices.shape}")
    return indices.astype(jnp.int32)


def _check_rewards(fn: str, buf: Any) -> None:
    shape = buf.input_spec()["rew"].shape
    if shape != ():
        raise InputError(
            f"jaxbuf: {fn}: needs scalar rewards (field 'rew' of shape ()), got {shape}"
        )


def _per_index_values(fn: str, name: str, value: chex.Array, count: int) -> jax.Array:
    """Flattens a critic output (``[I]``, ``[I, 1]``, ...) to ``[I]``, like Tianshou."""
    value = jnp.asarray(value)
    if value.size != count:
        raise InputError(
            f"jaxbuf: {fn}: `{name}` must hold one value per index ({count}), got shape "
            f"{value.shape}"
        )
    if not jnp.issubdtype(value.dtype, jnp.floating):
        raise InputError(f"jaxbuf: {fn}: `{name}` must be floating, got dtype {value.dtype}")
    return value.reshape(count)


def _check_n_step(fn: str, n_step: int) -> None:
    if isinstance(n_step, bool) or not isinstance(n_step, int | np.integer) or n_step < 1:
        raise InputError(f"jaxbuf: {fn}: `n_step` must be a Python int >= 1, got {n_step!r}")


def episodic_return(
    buf: Any,
    indices: chex.Array,
    v_s_: chex.Array | None = None,
    v_s: chex.Array | None = None,
    gamma: chex.Numeric = 0.99,
    gae_lambda: chex.Numeric = 0.95,
) -> tuple[jax.Array, jax.Array]:
    r"""GAE advantages and returns for the steps ``indices`` of ``buf`` (Monte Carlo with λ=1).

    For position ``i`` with slot ``s = indices[i]`` (Schulman et al. 2016, eq. 16):

    .. math::
        V'_i &= v\_s\_[i]\,(1 - \mathrm{terminated}[s]) \\
        \delta_i &= \mathrm{rew}[s] + \gamma V'_i - V_i \\
        A_i &= \delta_i + \gamma\lambda\,[\text{not end}(s) \wedge \mathrm{next}(s) \in
               \text{indices}]\; A_{\mathrm{pos}(\mathrm{next}(s))} \\
        R_i &= A_i + V_i

    ``end(s)`` is ``buf.is_episode_end(s)``: terminated, truncated, or the unfinished head.
    Terminated steps bootstrap from 0; truncated and unfinished steps keep ``V(obs_next)`` but
    end the recursion. The recursion follows ``buf.next``, not the array order of
    ``indices``: any order gives the same value per slot. With chronological indices
    (``buf.all_indices()``, Tianshou's ``sample_indices(0)``) this equals Tianshou's
    ``compute_episodic_return``; for other orders Tianshou follows array order and cuts
    episodes at array boundaries, which jaxbuf does not reproduce (example in docs/returns.md,
    "Differences from Tianshou"). If ``next(s)``
    is not among ``indices`` the recursion stops there (the window ends), keeping the
    bootstrap. Implemented by pointer jumping over the successor links: ``ceil(log2 I)``
    vectorised gathers, so it is ``O(I log I)`` and fully parallel.

    Args:
      buf: a ``ReplayBuffer`` / ``VectorReplayBuffer`` with scalar rewards.
      indices: int ``[I]`` global slots; negative entries are padding (zero outputs). Slots
        should be distinct (with duplicates, the links use one of the copies).
      v_s_: ``V(obs_next)`` per index (``[I]`` or any shape of size ``I``), or ``None`` for
        no bootstrap (zeros; then ``gae_lambda`` must be 1: Monte Carlo returns).
      v_s: ``V(obs)`` per index, or ``None`` for Tianshou's stand-in
        ``roll(V'_masked, 1)`` in array order over the non-padding entries (right only
        inside chronological episodes; at an episode start it takes the previous row's
        value; pass ``v_s`` instead).
      gamma: discount factor.
      gae_lambda: GAE λ (1 gives discounted returns, 0 one-step TD errors).

    Returns:
      ``(returns, advantages)``, float ``[I]`` (Tianshou's order); zero at padding.

    Example:
      >>> import jax.numpy as jnp
      >>> import jaxbuf
      >>> from jaxbuf.returns import episodic_return
      >>> ex = dict(obs=jnp.float32(0), act=jnp.int32(0), rew=jnp.float32(0),
      ...           terminated=False, truncated=False)
      >>> rows = dict(obs=jnp.arange(3.0), act=jnp.zeros(3, jnp.int32), rew=jnp.ones(3),
      ...             terminated=jnp.array([False, True, False]), truncated=jnp.zeros(3, bool))
      >>> buf, _ = jaxbuf.ReplayBuffer.create(ex, 4).extend(rows)  # slot 2: unfinished
      >>> indices = buf.chronological_indices()
      >>> ret, adv = episodic_return(buf, indices, gamma=0.5, gae_lambda=1.0)
      >>> ret.tolist()
      [1.5, 1.0, 1.0]
    """
    fn = "episodic_return"
    indices = _check_indices(fn, indices, rank_one=True)
    _check_rewards(fn, buf)
    count = indices.shape[0]
    if v_s_ is None:
        if isinstance(gae_lambda, int | float) and gae_lambda != 1:
            raise InputError(
                f"jaxbuf: {fn}: without `v_s_` (no bootstrap) `gae_lambda` must be 1, got "
                f"{gae_lambda}"
            )
    else:
        v_s_ = _per_index_values(fn, "v_s_", v_s_, count)
    if v_s is not None:
        v_s = _per_index_values(fn, "v_s", v_s, count)
    return _episodic_return(buf, indices, v_s_, v_s, gamma, gae_lambda)


@jax.jit
def _episodic_return(buf, indices, v_s_, v_s, gamma, gae_lambda):
    count = indices.shape[0]
    valid = indices >= 0
    slot = jnp.where(valid, indices, 0)
    rew = buf.get(slot, "rew", 1)
    dtype = jnp.result_type(rew, *(v for v in (v_s_, v_s) if v is not None), jnp.float32)
    rew = rew.astype(dtype)
    terminated = buf.get(slot, "terminated", 1)
    if v_s_ is None:
        v_next = jnp.zeros(count, dtype)
    else:
        v_next = jnp.where(terminated | ~valid, 0.0, v_s_.astype(dtype))
    position = jnp.arange(count, dtype=jnp.int32)
    if v_s is None:
        v_cur = v_next[_previous_valid(valid, position)]
    else:
        v_cur = jnp.where(valid, v_s.astype(dtype), 0.0)
    delta = jnp.where(valid, rew + gamma * v_next - v_cur, 0.0)

    # Successor position of each position along the episode, or -1.
    pos_of_slot = (
        jnp.full(buf.maxsize, -1, jnp.int32)
        .at[jnp.where(valid, indices, buf.maxsize)]
        .max(position, mode="drop")
    )
    succ = pos_of_slot[buf.next(slot)]
    linked = valid & ~buf.is_episode_end(slot) & (succ >= 0)
    coef = jnp.where(linked, gamma * gae_lambda, 0.0).astype(dtype)
    pointer = jnp.where(linked, succ, position)

    # Pointer jumping: keep A_true[i] = adv[i] + coef[i] * A_true[pointer[i]] invariant while
    # doubling the distance covered by each pointer.
    def jump(_, state):
        adv, coef, pointer = state
        return adv + coef * adv[pointer], coef * coef[pointer], pointer[pointer]

    rounds = max(1, math.ceil(math.log2(max(count, 2))))
    advantages, _, _ = jax.lax.fori_loop(0, rounds, jump, (delta, coef, pointer))
    returns = jnp.where(valid, advantages + v_cur, 0.0)
    return returns, advantages


def _previous_valid(valid: jax.Array, position: jax.Array) -> jax.Array:
    """Cyclic predecessor among valid positions: ``roll(x, 1)`` of the valid entries only."""
    last_valid = jax.lax.cummax(jnp.where(valid, position, -1))
    before = jnp.concatenate([jnp.full((1,), -1, position.dtype), last_valid[:-1]])
    return jnp.where(before >= 0, before, last_valid[-1])


def nstep_targets(
    buf: Any, indices: chex.Array, gamma: chex.Numeric, n_step: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
    r"""The reward part and the bootstrap of n-step targets for ``indices`` (any shape).

    With ``chain_0 = s`` and ``chain_k = buf.next(chain_{k-1})`` (which stops at episode
    ends), ``m`` = 1 + the first ``k < n`` with ``is_episode_end(chain_k)``, or ``n``:

    .. math::
        \text{partial\_return} &= \sum_{k<m} \gamma^k\, \mathrm{rew}[\mathrm{chain}_k] \\
        \text{bootstrap\_index} &= \mathrm{chain}_{m-1} \;(= \mathrm{next}^{n-1}(s)) \\
        \text{bootstrap\_discount} &= \gamma^m\,(1 - \mathrm{terminated}[\text{bootstrap\_index}])

    so a learner forms ``partial_return + bootstrap_discount * Q(obs_next[bootstrap_index])``
    with its own network. Terminated inside the window: the sum stops, no bootstrap.
    Truncated or unfinished: the sum stops, the bootstrap is kept. This is Tianshou's
    ``compute_nstep_return`` (Sutton & Barto 2018, eq. 7.1), computed by a ``lax.scan`` of
    ``n_step`` vectorised gathers along the ``next`` links.

    Args:
      buf: a ``ReplayBuffer`` / ``VectorReplayBuffer`` with scalar rewards.
      indices: int global slots, any shape; negative entries are padding.
      gamma: discount factor.
      n_step: window length, a static Python int ``>= 1``.

    Returns:
      ``(bootstrap_index, partial_return, bootstrap_discount)`` shaped like ``indices``
      (int32, float, float). Padding gets index 0, return 0 and discount 0.

    Example:
      >>> import jax.numpy as jnp
      >>> import jaxbuf
      >>> from jaxbuf.returns import nstep_targets
      >>> ex = dict(obs=jnp.float32(0), act=jnp.int32(0), rew=jnp.float32(0),
      ...           terminated=False, truncated=False)
      >>> rows = dict(obs=jnp.arange(3.0), act=jnp.zeros(3, jnp.int32), rew=jnp.ones(3),
      ...             terminated=jnp.array([False, True, False]), truncated=jnp.zeros(3, bool))
      >>> buf, _ = jaxbuf.ReplayBuffer.create(ex, 4).extend(rows)  # slot 2: unfinished
      >>> indices = buf.chronological_indices()
      >>> boot, partial, discount = nstep_targets(buf, indices, gamma=0.5, n_step=2)
      >>> boot.tolist(), partial.tolist(), discount.tolist()
      ([1, 1, 2], [1.5, 1.0, 1.0], [0.0, 0.0, 0.5])
    """
    fn = "nstep_targets"
    indices = _check_indices(fn, indices, rank_one=False)
    _check_rewards(fn, buf)
    _check_n_step(fn, n_step)
    return _nstep_targets(buf, indices, gamma, n_step)


@functools.partial(jax.jit, static_argnums=3)
def _nstep_targets(buf, indices, gamma, n_step):
    valid = indices >= 0
    slot = jnp.where(valid, indices, 0)
    dtype = jnp.result_type(buf.input_spec()["rew"].dtype, jnp.float32)
    gamma = jnp.asarray(gamma, dtype)

    def step(carry, _):
        current, partial, scale, boot_index, boot_scale, active = carry
        partial = partial + jnp.where(active, scale * buf.get(current, "rew", 1), 0.0)
        scale = scale * gamma
        boot_index = jnp.where(active, current, boot_index)
        boot_scale = jnp.where(active, scale, boot_scale)
        active = active & ~buf.is_episode_end(current)
        return (buf.next(current), partial, scale, boot_index, boot_scale, active), None

    zeros = jnp.zeros(slot.shape, dtype)
    init = (slot, zeros, jnp.ones(slot.shape, dtype), slot, zeros, valid)
    (_, partial, _, boot_index, boot_scale, _), _ = jax.lax.scan(step, init, None, length=n_step)
    discount = jnp.where(buf.get(boot_index, "terminated", 1), 0.0, boot_scale)
    return boot_index, partial, discount


def nstep_return(
    buf: Any,
    indices: chex.Array,
    target_q_fn: Callable[[Any, jax.Array], chex.Array],
    gamma: chex.Numeric = 0.99,
    n_step: int = 1,
) -> jax.Array:
    r"""n-step TD targets ``partial_return + bootstrap_discount * target_q_fn(buf, boot)``.

    See :func:`nstep_targets` for the terms. ``target_q_fn(buf, bootstrap_index)`` must be
    traceable and return the target value of ``obs_next`` at those slots, with a leading axis
    shaped like ``indices`` (e.g. ``[I]``, or ``[I, A]`` for several heads): DQN evaluates
    ``max_a Q_target(buf[boot]["obs_next"], a)``. Its value is multiplied by the discount,
    which is 0 when the bootstrap step is terminated. This function is not jitted itself (so
    a closure over network parameters does not recompile it); call it inside your jitted
    update.

    Returns:
      float targets shaped like ``target_q_fn``'s output.

    Example:
      >>> import jax.numpy as jnp
      >>> import jaxbuf
      >>> from jaxbuf.returns import nstep_return
      >>> ex = dict(obs=jnp.float32(0), act=jnp.int32(0), rew=jnp.float32(0),
      ...           terminated=False, truncated=False)
      >>> rows = dict(obs=jnp.arange(3.0), act=jnp.zeros(3, jnp.int32), rew=jnp.ones(3),
      ...             terminated=jnp.array([False, True, False]), truncated=jnp.zeros(3, bool))
      >>> buf, _ = jaxbuf.ReplayBuffer.create(ex, 4).extend(rows)  # slot 2: unfinished
      >>> indices = buf.chronological_indices()
      >>> q_next = lambda buf, boot: jnp.full(boot.shape, 4.0)  # a stand-in target critic
      >>> nstep_return(buf, indices, q_next, gamma=0.5, n_step=2).tolist()
      [1.5, 1.0, 3.0]
    """
    boot_index, partial, discount = nstep_targets(buf, indices, gamma, n_step)
    q = jnp.asarray(target_q_fn(buf, boot_index))
    if q.shape[: partial.ndim] != partial.shape:
        raise InputError(
            "jaxbuf: nstep_return: `target_q_fn` must return a leading shape equal to `indices` "
            f"{partial.shape}, got {q.shape}"
        )
    return broadcast_rows(partial, q) + broadcast_rows(discount, q) * q
