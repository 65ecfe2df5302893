"""The reverse first-order linear recurrence behind GAE and lambda-returns.

Every backward-looking return in this package has the form

    x_t = b_t + a_t * x_{t+1},        t = T-1, ..., 0,        x_T = init,

along the leading (time) axis, where ``(a_t, b_t)`` are elementwise functions of the step's
inputs. It is solved either with a reverse ``lax.scan`` (``T`` sequential steps) or with
``lax.associative_scan`` (``O(log T)`` depth, for accelerators). The associative form uses
that affine maps ``x -> a*x + b`` compose associatively: applying ``(a_t, b_t)`` after
``(A, B)`` gives ``(a_t*A, a_t*B + b_t)`` (Blelloch 1990, "Prefix sums and their
applications").

The sequential path computes ``a`` and ``b`` as whole arrays first (vectorised) and the loop
does only the multiply-add. A variant that computed them inside the loop body was measured
slower on an idle 2-core CPU (inside a jitted loop: 17.4 vs 23.3 us for ``[2048, 8]``,
12.1 vs 12.6 us for ``[128, 64]``) and was removed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import chex
import jax

Terms = Callable[[Any], tuple[chex.Array, chex.Array]]
Emit = Callable[[chex.Array, Any], Any]


def _compose(later: tuple[chex.Array, chex.Array], earlier: tuple[chex.Array, chex.Array]):
    """Composes the accumulated map of later steps with the map of an earlier step."""
    a_later, b_later = later
    a_t, b_t = earlier
    return a_t * a_later, a_t * b_later + b_t


def reverse_affine_scan(
    terms: Terms,
    inputs: Any,
    init: chex.Array,
    emit: Emit,
    use_associative_scan: bool = False,
) -> Any:
    """Solves ``x_t = b_t + a_t * x_{t+1}`` backwards in time and returns ``emit(x, inputs)``.

    Args:
      terms: maps the inputs (a pytree of arrays) to ``(a, b)``; elementwise, so that it
        applies both to one time step (``[...]``) and to the whole rollout (``[T, ...]``).
      inputs: pytree of arrays, all with the same shape ``[T, ...]``.
      init: ``x_T``, shape ``[...]`` (one time step), floating.
      emit: maps ``(x, inputs)`` to the outputs; elementwise like ``terms``.
      use_associative_scan: use ``lax.associative_scan`` (log depth) instead of a reverse
        ``lax.scan``. Both give the same values up to floating-point reassociation.

    Returns:
      ``emit(x, inputs)`` with ``x`` of shape ``[T, ...]``.
    """
    if use_associative_scan:
        a, b = terms(inputs)
        b = b.at[-1].add(a[-1] * init)
        _, x = jax.lax.associative_scan(_compose, (a, b), reverse=True, axis=0)
        return emit(x, inputs)

    def step(x_next, ab):
        a_t, b_t = ab
        x_t = b_t + a_t * x_next
        return x_t, x_t

    _, x = jax.lax.scan(step, init, terms(inputs), reverse=True)
    return emit(x, inputs)
