"""The priority arithmetic of :class:`jaxbuf.PrioritizedReplayBuffer` (Schaul et al. 2016).

Leaves hold ``p ** alpha`` with ``p = |w| + eps``; importance weights are
``(p_i^alpha / p_min^alpha) ** -beta`` (the standard PER normalisation by the largest possible
weight), or divided by the batch maximum with Tianshou's ``weight_norm``. The kernels here hold
no run-time checks: those stay in the buffer's methods, where :func:`jaxbuf.checked` sees them.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxbuf._core import layout as links
from jaxbuf._core.layout import Layout
from jaxbuf.errors import ConfigError
from jaxbuf.prioritized.priority_tree import PriorityTree

EPS = float(np.finfo(np.float32).eps)
"""Added to ``|new_weight|`` so that no stored priority is 0 (Tianshou's ``eps``, 2**-23)."""


def check_alpha_beta(name: str, alpha: Any, beta: Any) -> None:
    for arg, value, low in (("alpha", alpha, "> 0"), ("beta", beta, ">= 0")):
        if isinstance(value, bool) or not isinstance(value, int | float | np.number):
            raise ConfigError(f"jaxbuf: {name}: {arg} must be a real number {low}, got {value!r}")
    if not (np.isfinite(alpha) and alpha > 0):
        raise ConfigError(f"jaxbuf: {name}: alpha must be a finite number > 0, got {alpha}")
    if not (np.isfinite(beta) and beta >= 0):
        raise ConfigError(f"jaxbuf: {name}: beta must be a finite number >= 0, got {beta}")


class UpdateChecks(NamedTuple):
    """Per-entry validity of an ``update_weight`` call (bool[B] each)."""

    in_range: jax.Array
    stored: jax.Array
    finite: jax.Array
    ok: jax.Array


# The kernels below are jitted so that eager calls compile once instead of op by op. They
# hold no run-time checks: those stay in the methods, where jaxbuf.checked sees them.


def write_max_priority(
    tree: PriorityTree, max_prio: jax.Array, index: jax.Array, *, alpha: float
) -> PriorityTree:
    """Set the leaves at ``index`` (int32[k]; negative entries ignored) to ``max_prio**alpha``."""
    return tree.set_unchecked(index, (max_prio**alpha).astype(jnp.float32))


def update_priorities(
    tree: PriorityTree,
    max_prio: jax.Array,
    layout: Layout,
    lengths: jax.Array,
    idx: jax.Array,
    weight: jax.Array,
    *,
    alpha: float,
) -> tuple[PriorityTree, jax.Array, UpdateChecks]:
    """``leaf[idx] = (|weight| + eps) ** alpha`` for the valid entries of ``idx`` (int32[B]).

    Valid: inside ``[0, maxsize)``, holding a transition (O(1) per entry, no capacity-sized
    mask) and with a finite weight. ``max_prio`` takes the largest accepted ``|weight| + eps``.
    """
    in_range = (idx >= 0) & (idx < tree.capacity)
    stored = in_range & links.stored_at(layout, jnp.clip(idx, 0, tree.capacity - 1), lengths)
    finite = jnp.isfinite(weight)
    ok = stored & finite
    p = jnp.abs(weight) + jnp.float32(EPS)
    prio = p**alpha
    target = jnp.where(ok, idx, -1)
    max_prio = jnp.maximum(max_prio, jnp.max(jnp.where(ok, p, 0.0), initial=0.0))
    return (
        tree.set_unchecked(target, prio),
        max_prio,
        UpdateChecks(in_range, stored, finite, ok),
    )


def importance_weights(
    leaf: jax.Array, p_min: jax.Array, beta: jax.Array, *, batch_norm: bool
) -> jax.Array:
    """``(leaf / ref) ** -beta`` for the leaf values ``leaf`` (any shape) where positive, else 0.

    ``ref`` is ``p_min``, the smallest stored leaf (standard PER normalisation), or with
    ``batch_norm`` the smallest positive value of ``leaf``, which divides the weights by their
    maximum over the read (Tianshou's ``weight_norm``). The ratio is clamped to ``>= 1`` so float
    round-off in the division cannot push a weight above 1.
    """
    stored = leaf > 0
    if batch_norm:
        ref = jnp.min(jnp.where(stored, leaf, jnp.inf), initial=jnp.inf)
    else:
        ref = p_min
    ratio = jnp.maximum(leaf / jnp.where(stored, ref, 1.0), 1.0)
    return jnp.where(stored, ratio ** (-beta), 0.0).astype(jnp.float32)
