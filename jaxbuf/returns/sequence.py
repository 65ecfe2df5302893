r"""n-step targets over sampled sequence windows (``buf.sample_sequences``).

A window is batch-major ``[B, L]`` with a ``mask`` that is true on its valid steps (a
window is cut, mask false, after the step that ends its episode, and a row that found no
window is all false). :func:`sequence_nstep` computes, for every valid step, the n-step
target that stays inside the window and inside the episode, and says whether it is a full
n-step target.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp

from jaxbuf.errors import InputError
from jaxbuf.returns.rollout import nstep


@functools.partial(jax.jit, static_argnames=("n", "stop_target_gradients"))
def sequence_nstep(
    rewards: chex.Array,
    next_values: chex.Array,
    terminated: chex.Array,
    truncated: chex.Array,
    mask: chex.Array,
    gamma: chex.Numeric,
    n: int,
    stop_target_gradients: bool = False,
) -> tuple[jax.Array, jax.Array]:
    r"""n-step targets inside each window, and which of them are complete.

    For a valid step ``t`` (``mask[b, t]``) let ``e_t`` be the first step ``s >= t`` that
    ends the sum: ``done_s = terminated_s or truncated_s``, or the window's last valid step
    (``s = L - 1`` or ``mask[b, s + 1]`` false), and ``m_t = min(n, e_t - t + 1)``:

    .. math::
        G_t = \sum_{k=0}^{m_t-1} \Big(\prod_{i<k} \gamma_{t+i}\Big) r_{t+k}
            + \Big(\prod_{i<m_t} \gamma_{t+i}\Big)(1 - \mathrm{term}_{t+m_t-1})\,
              V'_{t+m_t-1}

    So a terminated step stops the sum with no bootstrap; a truncated step (time limit) and
    the window's last valid step stop it and bootstrap from their ``next_values`` (the value
    of that step's true next observation, ``obs_next``); with a constant ``gamma`` this is
    ``sum_{k<m} gamma^k r_{t+k} + gamma^m (1 - term) V'_{t+m-1}``. ``complete[b, t]`` is
    true when ``m_t = n`` or the sum stopped at a ``done`` flag (a real episode end), and
    false when the window end cut it short (or the step is masked). Masked steps get 0.

    Args:
      rewards: ``r_t``, floating ``[B, L]`` (``batch["rew"]`` of the window) or ``[L]``.
      next_values: ``V'_t``, the value of step ``t``'s true next observation, floating,
        shape of ``rewards``. With a recurrent network: unroll it over ``batch["obs_next"]``
        from the state after ``batch["obs"][:, 0]`` (inside an episode ``obs_next_t`` is
        ``obs_{t+1}``; at a truncated step it is the final observation).
      terminated: bool/numeric, shape of ``rewards`` (``batch["terminated"]``).
      truncated: bool/numeric, shape of ``rewards`` (``batch["truncated"]``).
      mask: bool, shape of ``rewards`` (``seq.mask``).
      gamma: discount, scalar or broadcastable to ``rewards``.
      n: static int ``>= 1``.
      stop_target_gradients: apply ``lax.stop_gradient`` to the targets.

    Returns:
      ``(targets, complete)``: floating and bool, shape of ``rewards``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxbuf.returns import sequence_nstep
      >>> rew = jnp.array([[1.0, 1.0, 1.0, 1.0]])
      >>> v = jnp.array([[10.0, 10.0, 10.0, 10.0]])
      >>> term = jnp.array([[False, True, False, False]])
      >>> mask = jnp.array([[True, True, False, False]])  # the episode ends at step 1
      >>> g, ok = sequence_nstep(rew, v, term, jnp.zeros_like(term), mask, 0.5, 2)
      >>> g.tolist(), ok.tolist()
      ([[1.5, 1.0, 0.0, 0.0]], [[True, True, False, False]])
    """
    rewards = jnp.asarray(rewards)
    mask = jnp.asarray(mask)
    if mask.shape != rewards.shape:
        raise InputError(
            f"jaxbuf: sequence_nstep: mask must have the shape of rewards {rewards.shape}, "
            f"got {mask.shape}"
        )
    if rewards.ndim == 1:
        one = (rewards, next_values, terminated, truncated, mask)
        one = [jnp.asarray(x)[None] for x in one]
        gamma = jnp.asarray(gamma)
        gamma = gamma[None] if gamma.ndim == 1 else gamma
        g, ok = sequence_nstep(*one, gamma, n, stop_target_gradients)
        return g[0], ok[0]
    mask = mask.astype(bool)
    done = jnp.asarray(terminated).astype(bool) | jnp.asarray(truncated).astype(bool)
    later = jnp.pad(mask[:, 1:], ((0, 0), (0, 1)))
    cut = mask & ~later  # the window's last valid step
    g = nstep(
        rewards,
        next_values,
        terminated,
        jnp.asarray(truncated).astype(bool) | cut,
        gamma,
        n,
        time_major=False,
        stop_target_gradients=stop_target_gradients,
    )
    length = rewards.shape[1]
    steps = jnp.arange(length, dtype=jnp.int32)
    stop = jnp.where(mask & (done | cut), steps, length)
    first = jax.lax.cummin(stop, axis=1, reverse=True)  # e_t
    ended = jnp.take_along_axis(done, jnp.minimum(first, length - 1), axis=1)
    complete = mask & ((first - steps >= n - 1) | ended)
    return jnp.where(mask, g, jnp.zeros_like(g)), complete
