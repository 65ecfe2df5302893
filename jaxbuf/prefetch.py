"""Double-buffered sampling: draw the batch of step ``t + 1`` while step ``t`` computes.

With the storage in host memory (``storage_memory_kind="pinned_host"``) a sample is a host
gather and a host-to-device copy of the batch. When that gather depends on nothing the
current update produces, the runtime is free to run it at the same time as the update.
Two helpers arrange that; neither uses threads or callbacks:

* :func:`double_buffered` for compiled loops (``jit``, ``lax.scan``): it turns an update
  ``update(carry, batch) -> (carry, out)`` into a step that also returns the next batch,
  sampled from the carry as it was *before* the update. The draw and the update are then
  two independent parts of one compiled program, which XLA may schedule concurrently.
* :class:`Prefetcher` for Python loops: each call hands back the batch drawn at the previous
  call and dispatches the next draw at once. JAX dispatches asynchronously, so the draw is
  in flight while the caller dispatches its update.

The price in both cases is one step of staleness: the batch used at step ``t + 1`` was drawn
before step ``t``'s adds and priority updates (rows added at step ``t`` are first seen at
step ``t + 2``, and a prioritized draw uses the priorities of one update earlier). Whether
the overlap saves time depends on the backend (does it run host and device work, or two
programs, concurrently?); measure it (docs/memory.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

__all__ = ["Prefetcher", "double_buffered"]


def double_buffered(
    update: Callable[[Any, Any], tuple[Any, Any]], sample: Callable[[Any, Any], Any]
) -> Callable[[Any, Any, Any], tuple[Any, Any, Any]]:
    """A training step that samples its next batch beside the current update.

    Args:
      update: ``update(carry, batch) -> (carry, out)``: one training step (it may add to the
        buffer held in ``carry``, update priorities, ...).
      sample: ``sample(carry, key) -> batch``: draws a batch from the buffer in ``carry``
        (e.g. ``lambda c, k: c["buf"].sample(k, 256)``).

    Returns:
      ``step(carry, batch, key) -> (carry, next_batch, out)`` where
      ``next_batch = sample(carry, key)`` is drawn from the carry *before* ``update``, so it
      does not wait for the update (one step of staleness, see the module docstring). Start
      with ``batch = sample(carry, key0)``; the step is pure and jittable, and a
      ``lax.scan`` carries ``(carry, batch)``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxbuf import ReplayBuffer, double_buffered
      >>> ex = dict(obs=jnp.zeros(2), act=jnp.int32(0), rew=jnp.float32(0),
      ...           terminated=False, truncated=False)
      >>> buf = ReplayBuffer.create(ex, 8, storage_memory_kind="pinned_host")
      >>> buf, _ = buf.add(dict(ex, obs=jnp.ones(2)))
      >>> sample = lambda b, k: b.sample(k, 4)[0]
      >>> update = lambda b, batch: (b, batch["obs"].sum())
      >>> step = jax.jit(double_buffered(update, sample))
      >>> batch = sample(buf, jax.random.key(0))
      >>> buf, batch, loss = step(buf, batch, jax.random.key(1))
      >>> float(loss), batch["obs"].sharding.memory_kind
      (8.0, 'device')
    """

    def step(carry: Any, batch: Any, key: Any) -> tuple[Any, Any, Any]:
        next_batch = sample(carry, key)
        carry, out = update(carry, batch)
        return carry, next_batch, out

    return step


class Prefetcher:
    """Python-loop prefetch: each call returns the previous draw and starts the next one.

    ``sample_fn(buf, key)`` should be jitted (e.g. ``jax.jit(lambda b, k: b.sample(k, 256))``)
    so that calling it only dispatches work: the returned arrays are futures, and the draw
    runs while the caller goes on to dispatch its update. Keys come from splitting ``key``
    once per draw.

    ``pf(buf)`` returns the batch drawn from the buffer given at the previous call (the
    first call draws twice: its own batch from ``buf``, and the next one). Pass the newest
    buffer each time; the batch is one step stale (see the module docstring).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxbuf import Prefetcher, ReplayBuffer
      >>> ex = dict(obs=jnp.zeros(2), act=jnp.int32(0), rew=jnp.float32(0),
      ...           terminated=False, truncated=False)
      >>> buf, _ = ReplayBuffer.create(ex, 8).add(ex)
      >>> pf = Prefetcher(jax.jit(lambda b, k: b.sample(k, 4)), jax.random.key(0))
      >>> (batch, idx) = pf(buf)     # drawn now; the next draw is already dispatched
      >>> (batch, idx) = pf(buf)     # the draw dispatched by the previous call
      >>> idx.shape, pf.draws
      ((4,), 3)
    """

    def __init__(self, sample_fn: Callable[[Any, Any], Any], key: Any) -> None:
        self.sample_fn = sample_fn
        self._key = key
        self._pending: Any = None
        self.draws = 0
        """How many draws have been dispatched so far."""

    def _draw(self, buf: Any) -> Any:
        self._key, sub = jax.random.split(self._key)
        self.draws += 1
        return self.sample_fn(buf, sub)

    def __call__(self, buf: Any) -> Any:
        """The batch drawn at the previous call (or now, at the first); dispatches the next
        draw from ``buf`` before returning."""
        current = self._draw(buf) if self._pending is None else self._pending
        self._pending = self._draw(buf)
        return current

    def reset(self) -> None:
        """Drop the pending draw (e.g. after replacing the buffer); the next call draws anew."""
        self._pending = None
