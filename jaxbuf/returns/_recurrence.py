"""The reverse first-order linear recurrence behind GAE and lambda-returns.

Every backward-looking return in this package has the form

    x_t = b_t + a_t * x_{t+1},        t = T-1, ..., 0,        x_T = 0,

along the leading (time) axis. It is solved either with a reverse ``lax.scan`` (``T`` sequential
steps, the cheapest on CPU) or with ``lax.associative_scan`` (``O(log T)`` depth, for
accelerators). The associative form uses that affine maps ``x -> a*x + b`` compose
associatively: applying ``(a_t, b_t)`` after ``(A, B)`` gives ``(a_t*A, a_t*B + b_t)``
(Blelloch 1990, "Prefix sums and their applications"; Martin & Cundy 2018).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


def _compose(later: tuple[chex.Array, chex.Array], earlier: tuple[chex.Array, chex.Array]):
    """Composes the accumulated map of later steps with the map of an earlier step."""
    a_later, b_later = later
    a_t, b_t = earlier
    return a_t * a_later, a_t * b_later + b_t


def reverse_linear_recurrence(
    a: chex.Array, b: chex.Array, use_associative_scan: bool = False
) -> chex.Array:
    """Solves ``x_t = b_t + a_t * x_{t+1}`` backwards in time with ``x_T = 0``.

    Args:
      a: coefficients, shape ``[T, ...]``, floating.
      b: offsets, same shape and dtype as ``a``.
      use_associative_scan: use ``lax.associative_scan`` (log depth) instead of a reverse
        ``lax.scan``. Both give the same values up to floating-point reassociation.

    Returns:
      ``x``, shape ``[T, ...]``, dtype of ``b``.
    """
    if use_associative_scan:
        _, x = jax.lax.associative_scan(_compose, (a, b), reverse=True, axis=0)
        return x

    def step(x_next: chex.Array, ab: tuple[chex.Array, chex.Array]):
        a_t, b_t = ab
        x_t = b_t + a_t * x_next
        return x_t, x_t

    _, x = jax.lax.scan(step, jnp.zeros_like(b[0]), (a, b), reverse=True)
    return x
