"""Index sampling: uniform, available-for-stacking, epoch permutations, episode sequences."""

from __future__ import annotations

from collections.abc import Callable

import chex
import jax
import jax.numpy as jnp
from jax import lax

from jaxbuf._core.checks import runtime_check


def randint_below(key: chex.PRNGKey, shape: tuple, span: jax.Array) -> jax.Array:
    """int32 draws uniform on ``{0, ..., span - 1}`` (``span >= 1``, traced) from one bits call.

    Two 32-bit words ``hi, lo`` per draw are combined as
    ``(hi mod s) * (2^32 mod s) + (lo mod s)  (mod s)`` in uint32 arithmetic, exactly the
    construction of ``jax.random.randint``; drawing both words in one ``jax.random.bits`` call
    avoids randint's key split and second generator pass (docs/design.md).
    """
    bits = jax.random.bits(key, (2, *shape), jnp.uint32)
    s = jnp.asarray(span, jnp.uint32)
    half = lax.rem(jnp.uint32(1 << 16), s)
    mult = lax.rem(half * half, s)
    out = lax.rem(lax.rem(bits[0], s) * mult + lax.rem(bits[1], s), s)
    return out.astype(jnp.int32)


def sorted_position(cum: jax.Array, u: jax.Array) -> jax.Array:
    """``searchsorted(cum, u, side="right")``: the number of ``cum`` entries ``<= u``.

    The binary search is unrolled (``log2(len(cum))`` static steps): XLA:CPU runs the default
    ``while``-loop form of a top-level jitted call much slower (docs/design.md).
    """
    return jnp.searchsorted(cum, u, side="right", method="scan_unrolled")


def from_mask(key: chex.PRNGKey, batch_size: int, mask: jax.Array) -> jax.Array:
    """Uniform draws with replacement among the slots where ``mask`` is true (O(maxsize)).

    ``mask`` is the buffer's ``sample_avail`` mask (slots with a full stack of frames). Slot 0
    for every draw when it is empty (``jaxbuf.checked`` raises instead).
    """
    runtime_check(
        jnp.any(mask),
        "jaxbuf: sampling with sample_avail, but no stored slot has a full stack of frames",
    )
    cum = jnp.cumsum(mask.astype(jnp.int32))
    total = cum[-1]
    u = randint_below(key, (batch_size,), jnp.maximum(total, 1))
    idx = sorted_position(cum, u)
    return jnp.where(total > 0, idx, 0).astype(jnp.int32)


def epoch(key: chex.PRNGKey, batch_size: int, valid: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Every valid slot exactly once, shuffled, cut into minibatches (sampling without replacement).

    Returns ``(indices, mask)`` of shape ``[ceil(maxsize / batch_size), batch_size]``; the valid
    slots come first in a uniformly random order, the rest is padding (-1, mask false).
    """
    size = valid.shape[0]
    num = -(-size // batch_size)
    noise = jax.random.uniform(key, (size,))
    order = jnp.argsort(jnp.where(valid, noise, 2.0))
    mask = valid[order]
    idx = jnp.where(mask, order, -1).astype(jnp.int32)
    pad = num * batch_size - size
    idx = jnp.concatenate([idx, jnp.full((pad,), -1, jnp.int32)])
    mask = jnp.concatenate([mask, jnp.zeros((pad,), bool)])
    return idx.reshape(num, batch_size), mask.reshape(num, batch_size)


def sequences(
    start: jax.Array, length: int, next_: Callable, is_end: Callable
) -> tuple[jax.Array, jax.Array]:
    """Follow ``next`` links for ``length`` steps from each start.

    Returns ``(indices, mask)`` of shape ``[B, length]``; the mask turns false after the step
    that ends an episode (a done flag or the write head), and the index then stays put.
    """

    def step(carry, _):
        idx, alive = carry
        nxt_alive = alive & ~is_end(idx)
        return (next_(idx), nxt_alive), (idx, alive)

    _, (idx, mask) = lax.scan(step, (start, jnp.ones(start.shape, bool)), None, length=length)
    return idx.T, mask.T
