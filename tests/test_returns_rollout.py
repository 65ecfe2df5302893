"""Tests for jaxbuf.returns over rollout arrays: rlax parity, truncation, layouts, grads, errors."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxbuf.returns import discounted_returns, gae, lambda_returns, nstep

rlax = pytest.importorskip("rlax")  # in the `test` extra

TOL = {"rtol": 1e-6, "atol": 1e-6}
TOL_REF = {"rtol": 1e-5, "atol": 1e-5}  # float32 vs the float64 Python references


# ----------------------------------------------------------------------------------------------
# Pure-Python references, written from the definitions (one column, float64, plain loops).


def ref_gae(r, v, nv, term, trunc, gamma, lam):
    steps = len(r)
    adv = np.zeros(steps)
    nxt = 0.0
    for t in reversed(range(steps)):
        delta = r[t] + (0.0 if term[t] else gamma * nv[t]) - v[t]
        done = term[t] or trunc[t]
        adv[t] = delta + (0.0 if done else gamma * lam * nxt)
        nxt = adv[t]
    return adv, adv + np.asarray(v, np.float64)


def ref_nstep(r, nv, term, trunc, gamma, n):
    steps = len(r)
    out = np.zeros(steps)
    for t in range(steps):
        total, k = 0.0, 0
        while True:
            total += gamma**k * r[t + k]
            k += 1
            if term[t + k - 1] or trunc[t + k - 1] or k == n or t + k == steps:
                break
        last = t + k - 1
        out[t] = total + (0.0 if term[last] else gamma**k * nv[last])
    return out


def ref_lambda(r, nv, term, trunc, gamma, lam):
    steps = len(r)
    out = np.zeros(steps)
    for t in reversed(range(steps)):
        if term[t]:
            out[t] = r[t]
        elif trunc[t] or t == steps - 1:
            out[t] = r[t] + gamma * nv[t]
        else:
            out[t] = r[t] + gamma * ((1 - lam) * nv[t] + lam * out[t + 1])
    return out


def per_column(ref, *arrays, **kw):
    """Applies a one-column reference to every column of [T, B] arrays."""
    cols = [ref(*(np.asarray(a)[:, b] for a in arrays), **kw) for b in range(arrays[0].shape[1])]
    if isinstance(cols[0], tuple):
        return tuple(np.stack(c, axis=1) for c in zip(*cols, strict=True))
    return np.stack(cols, axis=1)


def rollout(seed, steps=12, batch=4, p_term=0.15, p_trunc=0.15):
    rng = np.random.default_rng(seed)
    rewards = rng.normal(size=(steps, batch)).astype(np.float32)
    values = rng.normal(size=(steps, batch)).astype(np.float32)
    next_values = rng.normal(size=(steps, batch)).astype(np.float32)
    terminated = rng.random((steps, batch)) < p_term
    truncated = rng.random((steps, batch)) < p_trunc
    return rewards, values, next_values, terminated, truncated


def rlax_batched(fn, *args, **kw):
    """rlax on [T, B]: vmap over the batch axis (rlax functions take one [T] sequence)."""
    return jax.vmap(functools.partial(fn, **kw), in_axes=1, out_axes=1)(*args)


# ----------------------------------------------------------------------------------------------
# rlax parity on sequences without truncation.


@pytest.mark.parametrize("gamma,lam", [(0.99, 0.95), (0.9, 0.0), (1.0, 1.0)])
def test_gae_matches_rlax_without_truncation(gamma, lam):
    r, v, _, term, _ = rollout(1, steps=20, batch=16)
    bootstrap = np.random.default_rng(100).normal(size=(1, 16)).astype(np.float32)
    v_all = np.concatenate([v, bootstrap])  # V(s_0..s_T): next value of step t is V(s_{t+1})
    no_trunc = np.zeros_like(term)
    adv, ret = gae(r, v_all[:-1], v_all[1:], term, no_trunc, gamma, lam)
    discount = (gamma * (1 - term)).astype(np.float32)
    expected = jax.vmap(
        rlax.truncated_generalized_advantage_estimation, in_axes=(1, 1, None, 1), out_axes=1
    )(r, discount, lam, v_all)
    np.testing.assert_allclose(adv, expected, **TOL)
    np.testing.assert_allclose(ret, expected + v, **TOL)


def test_lambda_and_discounted_match_rlax_without_truncation():
    r, _, nv, term, _ = rollout(2, steps=20, batch=16)
    no_trunc = np.zeros_like(term)
    discount = (0.95 * (1 - term)).astype(np.float32)
    for lam in (0.0, 0.7, 1.0):
        np.testing.assert_allclose(
            lambda_returns(r, nv, term, no_trunc, 0.95, lam),
            rlax_batched(rlax.lambda_returns, r, discount, nv, lambda_=lam),
            **TOL,
        )
    np.testing.assert_allclose(
        discounted_returns(r, nv, term, no_trunc, 0.95),
        rlax_batched(rlax.discounted_returns, r, discount, nv),
        **TOL,
    )


@pytest.mark.parametrize("n", [1, 2, 3, 5, 25])
def test_nstep_matches_rlax_without_truncation(n):
    r, _, nv, term, _ = rollout(n, steps=20, batch=16)
    discount = (0.9 * (1 - term)).astype(np.float32)
    np.testing.assert_allclose(
        nstep(r, nv, term, np.zeros_like(term), 0.9, n),
        rlax_batched(rlax.n_step_bootstrapped_returns, r, discount, nv, n=n),
        **TOL,
    )


# ----------------------------------------------------------------------------------------------
# Truncation: a hand-worked example and the pure-Python references.

# One sequence: step 1 is truncated (its true next state has value 5, the reset state after it
# has value 30), step 3 terminates. gamma = lambda = 0.5.
HAND = {
    "rewards": np.array([1.0, 2.0, 3.0, 4.0], np.float32),
    "values": np.array([10.0, 20.0, 30.0, 40.0], np.float32),
    "next_values": np.array([20.0, 5.0, 40.0, 50.0], np.float32),
    "terminated": np.array([False, False, False, True]),
    "truncated": np.array([False, True, False, False]),
}


def test_hand_worked_truncation_example():
    h = HAND
    flags = (h["terminated"], h["truncated"])
    # delta = [1, -15.5, -7, -36]; A3 = -36, A2 = -7 + 0.25 * A3, A1 = delta1 (cut), A0 = ...
    adv, ret = gae(h["rewards"], h["values"], h["next_values"], *flags, 0.5, 0.5)
    np.testing.assert_allclose(adv, [-2.875, -15.5, -16.0, -36.0])
    np.testing.assert_allclose(ret, [7.125, 4.5, 14.0, 4.0])
    lam = lambda_returns(h["rewards"], h["next_values"], *flags, 0.5, 0.5)
    np.testing.assert_allclose(lam, [7.125, 4.5, 14.0, 4.0])
    disc = discounted_returns(h["rewards"], h["next_values"], *flags, 0.5)
    np.testing.assert_allclose(disc, [3.25, 4.5, 5.0, 4.0])
    two = nstep(h["rewards"], h["next_values"], *flags, 0.5, 2)
    np.testing.assert_allclose(two, [3.25, 4.5, 5.0, 4.0])
    one = nstep(h["rewards"], h["next_values"], *flags, 0.5, 1)
    np.testing.assert_allclose(one, [11.0, 4.5, 23.0, 4.0])


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    gamma=st.floats(0.0, 1.0),
    lam=st.floats(0.0, 1.0),
    n=st.sampled_from([1, 2, 4, 13]),
)
def test_truncation_matches_python_reference(seed, gamma, lam, n):
    r, v, nv, term, trunc = rollout(seed, steps=9, batch=3, p_term=0.2, p_trunc=0.25)
    flags = (term, trunc)
    exp_adv, exp_ret = per_column(ref_gae, r, v, nv, *flags, gamma=gamma, lam=lam)
    adv, ret = jax.jit(gae)(r, v, nv, *flags, gamma, lam)
    np.testing.assert_allclose(adv, exp_adv, **TOL_REF)
    np.testing.assert_allclose(ret, exp_ret, **TOL_REF)
    np.testing.assert_allclose(
        jax.jit(lambda_returns)(r, nv, *flags, gamma, lam),
        per_column(ref_lambda, r, nv, *flags, gamma=gamma, lam=lam),
        **TOL_REF,
    )
    np.testing.assert_allclose(
        jax.jit(nstep, static_argnames="n")(r, nv, *flags, gamma, n=n),
        per_column(ref_nstep, r, nv, *flags, gamma=gamma, n=n),
        **TOL_REF,
    )


def test_gae_returns_equal_lambda_returns_when_values_are_consistent():
    r, v, nv, term, trunc = rollout(7, steps=30, batch=4)
    done = term | trunc
    # Inside episodes V(s_{t+1}) is both the bootstrap of step t and the baseline of step t+1.
    v[1:] = np.where(done[:-1], v[1:], nv[:-1])
    _, ret = gae(r, v, nv, term, trunc, 0.97, 0.9)
    np.testing.assert_allclose(ret, lambda_returns(r, nv, term, trunc, 0.97, 0.9), **TOL)


def test_nstep_long_window_equals_discounted_and_one_step_equals_td():
    r, _, nv, term, trunc = rollout(3, steps=15, batch=4)
    np.testing.assert_allclose(
        nstep(r, nv, term, trunc, 0.9, 15), discounted_returns(r, nv, term, trunc, 0.9), **TOL
    )
    np.testing.assert_allclose(
        nstep(r, nv, term, trunc, 0.9, 1), r + 0.9 * np.where(term, 0.0, nv), **TOL
    )


def test_per_step_gamma_and_lambda_arrays():
    r, v, nv, term, trunc = rollout(11, steps=10, batch=3)
    rng = np.random.default_rng(0)
    gamma = rng.uniform(0.5, 1.0, size=(10, 3)).astype(np.float32)
    lam = rng.uniform(0.0, 1.0, size=(10, 1)).astype(np.float32)  # broadcasts over B
    adv, _ = gae(r, v, nv, term, trunc, gamma, lam)
    expected = np.zeros((10, 3))
    for b in range(3):
        nxt = 0.0
        for t in reversed(range(10)):
            delta = r[t, b] + (0.0 if term[t, b] else gamma[t, b] * nv[t, b]) - v[t, b]
            nxt = delta + (0.0 if term[t, b] or trunc[t, b] else gamma[t, b] * lam[t, 0] * nxt)
            expected[t, b] = nxt
    np.testing.assert_allclose(adv, expected, **TOL_REF)


# ----------------------------------------------------------------------------------------------
# Implementation variants: associative scan, jit, layouts, gradients.


@pytest.mark.parametrize("batch", [6, 70])
def test_associative_and_sequential_scans_match_the_reference(batch):
    r, v, nv, term, trunc = rollout(5, steps=37, batch=batch)
    flags = (term, trunc)
    exp_adv, exp_ret = per_column(ref_gae, r, v, nv, *flags, gamma=0.99, lam=0.95)
    exp_lam = per_column(ref_lambda, r, nv, *flags, gamma=0.99, lam=0.8)
    exp_disc = per_column(ref_lambda, r, nv, *flags, gamma=0.99, lam=1.0)
    for assoc in (False, True):
        adv, ret = gae(r, v, nv, *flags, 0.99, 0.95, use_associative_scan=assoc)
        np.testing.assert_allclose(adv, exp_adv, **TOL_REF)
        np.testing.assert_allclose(ret, exp_ret, **TOL_REF)
        lam = lambda_returns(r, nv, *flags, 0.99, 0.8, use_associative_scan=assoc)
        np.testing.assert_allclose(lam, exp_lam, **TOL_REF)
        disc = discounted_returns(r, nv, *flags, 0.99, use_associative_scan=assoc)
        np.testing.assert_allclose(disc, exp_disc, **TOL_REF)


def test_jit_equals_eager():
    # The public functions are jitted; jax.disable_jit() runs the same code op by op.
    r, v, nv, term, trunc = rollout(2, steps=6, batch=2)
    flags = (term, trunc)
    calls = [
        lambda: gae(r, v, nv, *flags, 0.9, 0.8),
        lambda: gae(r, v, nv, *flags, 0.9, 0.8, use_associative_scan=True),
        lambda: nstep(r, nv, *flags, 0.9, 3),
        lambda: lambda_returns(r, nv, *flags, 0.9, 0.8),
        lambda: discounted_returns(r, nv, *flags, 0.9, use_associative_scan=True),
    ]
    for call in calls:
        jitted = call()
        with jax.disable_jit():
            eager = call()
        for a, b in zip(jax.tree.leaves(jitted), jax.tree.leaves(eager), strict=True):
            np.testing.assert_allclose(a, b, **TOL)


def test_batch_major_and_rank_one_layouts():
    r, v, nv, term, trunc = rollout(4, steps=8, batch=3)
    time_major = gae(r, v, nv, term, trunc, 0.9, 0.8)
    batch_major = gae(r.T, v.T, nv.T, term.T, trunc.T, 0.9, 0.8, time_major=False)
    for a, b in zip(time_major, batch_major, strict=True):
        np.testing.assert_allclose(a, b.T, **TOL)
    column = gae(r[:, 1], v[:, 1], nv[:, 1], term[:, 1], trunc[:, 1], 0.9, 0.8)
    np.testing.assert_allclose(column[0], time_major[0][:, 1], **TOL)
    np.testing.assert_allclose(
        nstep(r.T, nv.T, term.T, trunc.T, 0.9, 3, time_major=False).T,
        nstep(r, nv, term, trunc, 0.9, 3),
        **TOL,
    )
    np.testing.assert_allclose(
        lambda_returns(r.T, nv.T, term.T, trunc.T, 0.9, 0.5, time_major=False).T,
        lambda_returns(r, nv, term, trunc, 0.9, 0.5),
        **TOL,
    )


def test_vmap_over_a_leading_axis():
    r, v, nv, term, trunc = rollout(6, steps=8, batch=3)
    stacked = [np.stack([x, x[::-1]]) for x in (r, v, nv, term, trunc)]
    out = jax.vmap(lambda *a: gae(*a, 0.9, 0.8)[0])(*stacked)
    np.testing.assert_allclose(out[0], gae(r, v, nv, term, trunc, 0.9, 0.8)[0], **TOL)


def test_gradients_flow_through_values_like_rlax():
    r, v, _, term, _ = rollout(8, steps=10, batch=2)
    v_all = np.concatenate([v, v[-1:] * 0.5])
    no_trunc = np.zeros_like(term)
    discount = (0.9 * (1 - term)).astype(np.float32)

    def ours(values):
        adv, _ = gae(r, values[:-1], values[1:], term, no_trunc, 0.9, 0.8)
        return jnp.sum(adv**2)

    def theirs(values):
        adv = jax.vmap(
            rlax.truncated_generalized_advantage_estimation, in_axes=(1, 1, None, 1), out_axes=1
        )(r, discount, 0.8, values)
        return jnp.sum(adv**2)

    grad = jax.grad(ours)(v_all)
    np.testing.assert_allclose(grad, jax.grad(theirs)(v_all), **TOL_REF)
    assert np.all(np.isfinite(grad)) and np.any(grad != 0)


def test_gradients_agree_across_scan_variants():
    r, v, nv, term, trunc = rollout(13, steps=9, batch=70)

    def loss(values, next_values, assoc):
        adv, ret = gae(r, values, next_values, term, trunc, 0.9, 0.8, use_associative_scan=assoc)
        lam = lambda_returns(r, next_values, term, trunc, 0.9, 0.7, use_associative_scan=assoc)
        return jnp.sum(adv**2) + jnp.sum(ret * lam)

    grads = jax.grad(loss, argnums=(0, 1))
    for a, b in zip(grads(v, nv, False), grads(v, nv, True)):
        np.testing.assert_allclose(a, b, **TOL_REF)


def test_gradient_of_nstep_and_lambda_wrt_next_values():
    r, _, nv, term, trunc = rollout(9, steps=6, batch=1)
    # d/dV' of the 1-step target r + gamma (1 - term) V' is gamma (1 - term).
    grad = jax.grad(lambda x: jnp.sum(nstep(r, x, term, trunc, 0.9, 1)))(nv)
    np.testing.assert_allclose(grad, 0.9 * (1 - term), **TOL)
    grad = jax.grad(lambda x: jnp.sum(lambda_returns(r, x, term, trunc, 0.9, 0.0)))(nv)
    np.testing.assert_allclose(grad, 0.9 * (1 - term), **TOL)


def test_stop_target_gradients():
    r, v, nv, term, trunc = rollout(10, steps=6, batch=2)

    def loss(values, stop):
        adv, ret = gae(r, values, nv, term, trunc, 0.9, 0.8, stop_target_gradients=stop)
        return jnp.sum(adv) + jnp.sum(ret)

    assert np.any(jax.grad(loss)(v, False) != 0)
    np.testing.assert_array_equal(jax.grad(loss)(v, True), 0.0)
    for fn in (
        lambda x: nstep(r, x, term, trunc, 0.9, 2, stop_target_gradients=True),
        lambda x: lambda_returns(r, x, term, trunc, 0.9, 0.5, stop_target_gradients=True),
        lambda x: discounted_returns(r, x, term, trunc, 0.9, stop_target_gradients=True),
    ):
        np.testing.assert_array_equal(jax.grad(lambda x, f=fn: jnp.sum(f(x)))(nv), 0.0)


def test_dtype_follows_float_inputs_and_flags_may_be_numeric():
    r, v, nv, term, trunc = rollout(12, steps=5, batch=2)
    adv, ret = gae(r, v, nv, term.astype(np.float32), trunc.astype(np.int32), 0.9, 0.8)
    assert adv.dtype == jnp.float32 and ret.dtype == jnp.float32
    np.testing.assert_allclose(adv, gae(r, v, nv, term, trunc, 0.9, 0.8)[0], **TOL)


# ----------------------------------------------------------------------------------------------
# Bad input.


def test_bad_input_raises_clear_errors():
    r, v, nv, term, trunc = rollout(0, steps=5, batch=2)
    with pytest.raises(AssertionError, match=r"gae: `rewards` must be \[T\] or \[T, B\]"):
        gae(r[..., None], v[..., None], nv[..., None], term, trunc, 0.9, 0.8)
    with pytest.raises(
        ValueError, match=r"gae: `values` must have the shape of `rewards` \(5, 2\)"
    ):
        gae(r, v[:4], nv, term, trunc, 0.9, 0.8)
    with pytest.raises(ValueError, match=r"`truncated` must have the shape"):
        gae(r, v, nv, term, trunc.T, 0.9, 0.8)
    with pytest.raises(AssertionError, match=r"`rewards` must be floating, got dtype int32"):
        gae(r.astype(np.int32), v, nv, term, trunc, 0.9, 0.8)
    with pytest.raises(ValueError, match=r"`gamma` must be a scalar or broadcast"):
        gae(r, v, nv, term, trunc, np.ones(3), 0.8)
    with pytest.raises(ValueError, match=r"`lambda_` must be a scalar or broadcast"):
        lambda_returns(r, nv, term, trunc, 0.9, np.ones((5, 2, 1)))
    with pytest.raises(ValueError, match=r"needs at least one time step"):
        discounted_returns(r[:0], nv[:0], term[:0], trunc[:0], 0.9)
    with pytest.raises(AssertionError, match=r"\[B, T\] \(batch-major\)"):
        nstep(r[..., None], nv[..., None], term, trunc, 0.9, 2, time_major=False)
    with pytest.raises(ValueError, match=r"nstep: `n` must be a Python int >= 1, got 0"):
        nstep(r, nv, term, trunc, 0.9, 0)
    with pytest.raises(ValueError, match=r"`terminated` must be boolean or numeric"):
        nstep(r, nv, np.zeros((5, 2), np.complex64), trunc, 0.9, 2)
