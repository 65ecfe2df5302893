r"""Returns and advantages over rollout arrays, truncation-correct.

These functions take a rollout as dense arrays -- ``[T, B]`` (time-major, the default),
``[B, T]`` with ``time_major=False``, or a single sequence ``[T]`` -- so they need no ``vmap``.
They follow rlax's time-major "outputs at 0..T-1" convention, but take explicit episode flags
instead of a combined discount:

* ``rewards[t]``      r_t, the reward received when leaving s_t with a_t;
* ``values[t]``       V(s_t), the baseline (GAE only);
* ``next_values[t]``  V(s_{t+1}), the value of the *true* next observation of step t (for an
  auto-reset environment: the final observation of the finished episode, not the reset one);
* ``terminated[t]``   s_{t+1} is terminal: no bootstrap, the return stops;
* ``truncated[t]``    the episode was cut after step t (time limit): the return stops but
  bootstraps from ``next_values[t]``;
* ``gamma``, ``gae_lambda`` / ``lambda_``  scalars or arrays broadcastable to ``rewards``.

With ``done_t = terminated_t or truncated_t`` every target stops at ``done_t`` and after the
last step ``T-1`` (which bootstraps from ``next_values[T-1]`` unless terminated), so a rollout
may cut episodes anywhere and contain several episodes per column. ``rlax`` can express
truncation in the middle of a sequence only for lambda-returns; its GAE cannot, because the
bootstrap of step t and the baseline of step t+1 come from one ``values`` array.

Without truncation, with ``discount_t = gamma * (1 - terminated_t)`` and rlax's
``v_t = next_values`` (for GAE, ``values = concat(values, next_values[-1:])``), the results
equal rlax's ``truncated_generalized_advantage_estimation``, ``lambda_returns``,
``n_step_bootstrapped_returns`` and ``discounted_returns`` vmapped over ``B``.

Arguments common to every function here:

* ``rewards``: r_t, floating, ``[T, B]`` (``[B, T]`` if not ``time_major``) or ``[T]``;
* ``next_values``: V(s_{t+1}) of the true next observation, floating, shape of ``rewards``;
* ``terminated``, ``truncated``: bool/numeric, shape of ``rewards``;
* ``gamma``: discount, scalar or broadcastable to ``rewards``;
* ``time_major``: ``True`` for ``[T, B]``, ``False`` for ``[B, T]``;
* ``stop_target_gradients``: apply ``lax.stop_gradient`` to the outputs;
* ``use_associative_scan``: solve the recurrence with ``lax.associative_scan`` (log depth).

Gradients flow into ``values`` and ``next_values`` unless ``stop_target_gradients=True``, which
applies ``lax.stop_gradient`` to the outputs. Each function is wrapped in ``jax.jit`` (the
booleans and ``n`` are static), so eager calls reuse one compiled computation per input
signature; input checks run when a new signature is traced.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp

from jaxbuf.returns._recurrence import reverse_affine_scan
from jaxbuf.returns._validate import (
    check_coefficient,
    check_n_step,
    check_rollout,
    from_time_major,
    to_time_major,
)


def _prepare(
    fn: str,
    time_major: bool,
    floats: dict[str, chex.Array],
    terminated: chex.Array,
    truncated: chex.Array,
    coefficients: dict[str, chex.Numeric],
) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
    """Validates and returns ``(steps, consts)``, time on axis 0.

    ``steps`` holds the per-step arrays: the floats in their common float dtype, the flags as
    bool, and the coefficients that vary (broadcast to the rollout shape). ``consts`` holds
    the scalar coefficients, kept scalar so that they cost nothing per step.
    """
    floats = {k: jnp.asarray(v) for k, v in floats.items()}
    flags = {"terminated": jnp.asarray(terminated), "truncated": jnp.asarray(truncated)}
    check_rollout(fn, time_major, floats, flags)
    shape = next(iter(floats.values())).shape
    for name, value in coefficients.items():
        check_coefficient(fn, name, value, shape)
    dtype = jnp.result_type(*floats.values())
    steps = {k: to_time_major(v.astype(dtype), time_major) for k, v in floats.items()}
    steps.update({k: to_time_major(v.astype(bool), time_major) for k, v in flags.items()})
    consts = {}
    for name, value in coefficients.items():
        value = jnp.asarray(value, dtype)
        if value.ndim == 0:
            consts[name] = value
        else:
            steps[name] = to_time_major(jnp.broadcast_to(value, shape), time_major)
    return steps, consts


def _finish(x: chex.Array, time_major: bool, stop_target_gradients: bool) -> chex.Array:
    if stop_target_gradients:
        x = jax.lax.stop_gradient(x)
    return from_time_major(x, time_major)


@functools.partial(
    jax.jit, static_argnames=("time_major", "stop_target_gradients", "use_associative_scan")
)
def gae(
    rewards: chex.Array,
    values: chex.Array,
    next_values: chex.Array,
    terminated: chex.Array,
    truncated: chex.Array,
    gamma: chex.Numeric,
    gae_lambda: chex.Numeric,
    time_major: bool = True,
    stop_target_gradients: bool = False,
    use_associative_scan: bool = False,
) -> tuple[chex.Array, chex.Array]:
    r"""Generalized advantage estimation over a rollout (Schulman et al. 2016, eq. 16).

    .. math::
        \delta_t &= r_t + \gamma_t (1 - \mathrm{term}_t)\, V'_t - V_t \\
        A_t &= \delta_t + \gamma_t \lambda_t (1 - \mathrm{done}_t)\, A_{t+1},
        \qquad A_T = 0 \\
        R_t &= A_t + V_t

    with ``V_t = values[t]``, ``V'_t = next_values[t]`` and ``done = terminated | truncated``.
    A truncated step keeps its bootstrap ``V'_t`` but cuts the trace; the last step ``T-1``
    always bootstraps from ``next_values[T-1]`` (unless terminated) and has no successor.

    Reference: J. Schulman, P. Moritz, S. Levine, M. Jordan, P. Abbeel, "High-Dimensional
    Continuous Control Using Generalized Advantage Estimation", ICLR 2016.

    The arguments shared by every function of this module are described in its docstring.

    Args:
      values: V(s_t), floating, shape of ``rewards``.
      gae_lambda: GAE lambda, scalar or broadcastable to ``rewards``.

    Returns:
      ``(advantages, returns)``, both shaped like ``rewards``, in the common float dtype of
      ``rewards``, ``values`` and ``next_values``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxbuf.returns import gae
      >>> rew = jnp.array([1.0, 1.0, 1.0, 1.0])
      >>> next_v = jnp.full(4, 2.0)
      >>> term = jnp.array([False, True, False, False])  # step 1 ends its episode
      >>> trunc = jnp.zeros(4, bool)
      >>> adv, ret = gae(rew, jnp.ones(4), next_v, term, trunc, gamma=0.5, gae_lambda=0.5)
      >>> adv.tolist(), ret.tolist()
      ([1.0, 0.0, 1.25, 1.0], [2.0, 1.0, 2.25, 2.0])
    """
    steps, consts = _prepare(
        "gae",
        time_major,
        {"rewards": rewards, "values": values, "next_values": next_values},
        terminated,
        truncated,
        {"gamma": gamma, "gae_lambda": gae_lambda},
    )

    def terms(x):
        x = {**consts, **x}
        g = x["gamma"]
        trace = jnp.where(x["terminated"] | x["truncated"], 0.0, g * x["gae_lambda"])
        delta = x["rewards"] + jnp.where(x["terminated"], 0.0, g * x["next_values"]) - x["values"]
        return trace, delta

    advantages, returns = reverse_affine_scan(
        terms,
        steps,
        jnp.zeros_like(steps["rewards"][0]),
        lambda adv, x: (adv, adv + x["values"]),
        use_associative_scan,
    )
    return (
        _finish(advantages, time_major, stop_target_gradients),
        _finish(returns, time_major, stop_target_gradients),
    )


@functools.partial(
    jax.jit, static_argnames=("time_major", "stop_target_gradients", "use_associative_scan")
)
def lambda_returns(
    rewards: chex.Array,
    next_values: chex.Array,
    terminated: chex.Array,
    truncated: chex.Array,
    gamma: chex.Numeric,
    lambda_: chex.Numeric,
    time_major: bool = True,
    stop_target_gradients: bool = False,
    use_associative_scan: bool = False,
) -> chex.Array:
    r"""TD(lambda) returns over a rollout (Sutton & Barto 2018, section 12.1, eq. 12.18).

    .. math::
        G_t = r_t + \gamma_t (1 - \mathrm{term}_t)
              \big[(1 - \ell_t)\, V'_t + \ell_t\, G_{t+1}\big],
        \qquad \ell_t = \lambda_t\, (1 - \mathrm{trunc}_t)\, [t < T-1]

    So a terminated step gives ``G_t = r_t``; a truncated step and the last step give
    ``G_t = r_t + gamma_t * V'_t``. ``lambda_=1`` gives :func:`discounted_returns`,
    ``lambda_=0`` one-step TD targets. With ``next_values[t] = values[t+1]`` inside episodes,
    ``G`` equals the ``returns`` of :func:`gae`.

    Reference: R. Sutton, A. Barto, "Reinforcement Learning: An Introduction", 2nd ed., 2018.

    The arguments shared by every function of this module are described in its docstring.

    Args:
      lambda_: mixing parameter, scalar or broadcastable to ``rewards``.

    Returns:
      ``G``, shaped like ``rewards``, in the common float dtype of the float inputs.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxbuf.returns import lambda_returns
      >>> rew = jnp.array([1.0, 1.0, 1.0, 1.0])
      >>> next_v = jnp.full(4, 2.0)
      >>> term = jnp.array([False, True, False, False])  # step 1 ends its episode
      >>> trunc = jnp.zeros(4, bool)
      >>> lambda_returns(rew, next_v, term, trunc, gamma=0.5, lambda_=0.5).tolist()
      [1.75, 1.0, 2.0, 2.0]
    """
    coefficients = {"gamma": gamma, "lambda_": lambda_}
    return _lambda_returns(
        "lambda_returns",
        (rewards, next_values, terminated, truncated),
        coefficients,
        time_major,
        stop_target_gradients,
        use_associative_scan,
    )


def _lambda_returns(fn, rollout, coefficients, time_major, stop_gradients, associative):
    """``G_t = r_t + d_t [(1 - l_t) V'_t + l_t G_{t+1}]``, ``d = gamma (1 - term)``,
    ``l = lambda (1 - trunc)`` (``lambda = 1`` when not given), seeded with
    ``G_T = V'_{T-1}`` (so step T-1 bootstraps)."""
    rewards, next_values, terminated, truncated = rollout
    floats = {"rewards": rewards, "next_values": next_values}
    steps, consts = _prepare(fn, time_major, floats, terminated, truncated, coefficients)
    if "lambda_" not in coefficients:
        consts["lambda_"] = jnp.ones((), steps["rewards"].dtype)

    def terms(x):
        x = {**consts, **x}
        disc = jnp.where(x["terminated"], 0.0, x["gamma"])
        mix = jnp.where(x["truncated"], 0.0, x["lambda_"])
        return disc * mix, x["rewards"] + disc * (1.0 - mix) * x["next_values"]

    returns = reverse_affine_scan(
        terms, steps, steps["next_values"][-1], lambda g, _: g, associative
    )
    return _finish(returns, time_major, stop_gradients)


@functools.partial(
    jax.jit, static_argnames=("time_major", "stop_target_gradients", "use_associative_scan")
)
def discounted_returns(
    rewards: chex.Array,
    next_values: chex.Array,
    terminated: chex.Array,
    truncated: chex.Array,
    gamma: chex.Numeric,
    time_major: bool = True,
    stop_target_gradients: bool = False,
    use_associative_scan: bool = False,
) -> chex.Array:
    r"""Discounted returns to go, cut at episode ends (Sutton & Barto 2018, eq. 3.8).

    .. math::
        G_t = r_t + \gamma_t (1 - \mathrm{term}_t)
              \begin{cases} V'_t & \mathrm{trunc}_t \text{ or } t = T-1 \\
                            G_{t+1} & \text{otherwise} \end{cases}

    ``next_values`` is read only at truncated steps and at the last step (pass zeros there for
    pure Monte Carlo returns without bootstrap). This is :func:`lambda_returns` with
    ``lambda_=1``. Arguments: see the module docstring.

    Returns:
      ``G``, shaped like ``rewards``, in the common float dtype of the float inputs.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxbuf.returns import discounted_returns
      >>> rew = jnp.array([1.0, 1.0, 1.0, 1.0])
      >>> next_v = jnp.full(4, 2.0)
      >>> term = jnp.array([False, True, False, False])  # step 1 ends its episode
      >>> trunc = jnp.zeros(4, bool)
      >>> discounted_returns(rew, next_v, term, trunc, gamma=0.5).tolist()
      [1.5, 1.0, 2.0, 2.0]
    """
    return _lambda_returns(
        "discounted_returns",
        (rewards, next_values, terminated, truncated),
        {"gamma": gamma},
        time_major,
        stop_target_gradients,
        use_associative_scan,
    )


@functools.partial(jax.jit, static_argnames=("n", "time_major", "stop_target_gradients"))
def nstep(
    rewards: chex.Array,
    next_values: chex.Array,
    terminated: chex.Array,
    truncated: chex.Array,
    gamma: chex.Numeric,
    n: int,
    time_major: bool = True,
    stop_target_gradients: bool = False,
) -> chex.Array:
    r"""n-step bootstrapped returns over a rollout (Sutton & Barto 2018, eq. 7.1).

    For each t the window is the steps ``t, ..., t+m-1`` where ``m`` is the smallest of ``n``,
    ``T - t`` (the rollout ends) and ``1 + (first k >= 0 with done_{t+k})`` (the episode ends):

    .. math::
        G^{(n)}_t = \sum_{k=0}^{m-1} \Big(\prod_{i<k} \gamma_{t+i}\Big) r_{t+k}
                  + \Big(\prod_{i<m} \gamma_{t+i}\Big) (1 - \mathrm{term}_{t+m-1})\, V'_{t+m-1}

    So a terminated step inside the window stops the sum without bootstrap, a truncated step
    stops it and bootstraps from its ``next_values``, and windows that run past the rollout end
    bootstrap from ``next_values[T-1]`` with fewer than ``n`` rewards (as rlax does).
    Implemented as a ``lax.scan`` over the ``n`` window offsets with contiguous slices, so the
    cost is ``O(n T B)`` and the compile time does not grow with ``n``.

    The arguments shared by every function of this module are described in its docstring.

    Args:
      n: window length, a static Python int ``>= 1``.

    Returns:
      ``G^(n)``, shaped like ``rewards``, in the common float dtype of the float inputs.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxbuf.returns import nstep
      >>> rew = jnp.array([1.0, 1.0, 1.0, 1.0])
      >>> next_v = jnp.full(4, 2.0)
      >>> term = jnp.array([False, True, False, False])  # step 1 ends its episode
      >>> trunc = jnp.zeros(4, bool)
      >>> nstep(rew, next_v, term, trunc, gamma=0.5, n=2).tolist()
      [1.5, 1.0, 2.0, 2.0]
    """
    check_n_step("nstep", n)
    steps, consts = _prepare(
        "nstep",
        time_major,
        {"rewards": rewards, "next_values": next_values},
        terminated,
        truncated,
        {"gamma": gamma},
    )
    r = steps["rewards"]
    length = r.shape[0]
    # Pad n-1 steps after the end; padded steps are never active (they are past the rollout).
    pad = [(0, n - 1)] + [(0, 0)] * (r.ndim - 1)
    per_step = {
        "rewards": r,
        "boot": jnp.where(steps["terminated"], 0.0, steps["next_values"]),
        "done": steps["terminated"] | steps["truncated"],
        "in_range": jnp.ones_like(r, dtype=bool),
    }
    if "gamma" in steps:
        per_step["gamma"] = steps["gamma"]
    padded = {key: jnp.pad(x, pad) for key, x in per_step.items()}

    def window_step(carry, k):
        partial, scale, bootstrap, active = carry
        step = {key: jax.lax.dynamic_slice_in_dim(x, k, length) for key, x in padded.items()}
        step = {**consts, **step}
        active = active & step["in_range"]
        partial = partial + jnp.where(active, scale * step["rewards"], 0.0)
        scale = scale * step["gamma"]
        bootstrap = jnp.where(active, scale * step["boot"], bootstrap)
        active = active & ~step["done"]
        return (partial, scale, bootstrap, active), None

    init = (jnp.zeros_like(r), jnp.ones_like(r), jnp.zeros_like(r), jnp.ones_like(r, dtype=bool))
    (partial, _, bootstrap, _), _ = jax.lax.scan(window_step, init, jnp.arange(n))
    return _finish(partial + bootstrap, time_major, stop_target_gradients)
