"""Counters of a :class:`~jaxbuf.concurrent.RateLimitedBuffer`, as one immutable snapshot."""

from __future__ import annotations

import dataclasses

__all__ = ["Stats"]


@dataclasses.dataclass(frozen=True)
class Stats:
    """What a rate-limited buffer has done so far (a snapshot taken under its lock).

    Attributes:
      inserted_rows, insert_calls: rows inserted and ``insert`` calls that completed (rows
        the buffer held when it was wrapped count in ``size``, not here).
      sampled_rows, sample_calls: rows returned by ``sample`` and calls that completed.
      insert_blocked_s, sample_blocked_s: total seconds callers spent waiting for the limiter
        (summed over threads; waiting for the lock itself is not counted).
      insert_timeouts, sample_timeouts: calls that gave up with ``RateLimiterTimeout``.
      size: rows in the buffer according to the limiter (``inserts - deletes``).
      diff: ``inserted_rows * samples_per_insert - sampled_rows``, the quantity the limiter
        keeps inside its band.
      closed: whether :meth:`~jaxbuf.concurrent.RateLimitedBuffer.close` ran.

    Example:
      >>> import jax.numpy as jnp, jaxbuf
      >>> from jaxbuf.concurrent import MinSize, RateLimitedBuffer
      >>> ex = {"obs": jnp.zeros(3), "act": jnp.int32(0), "rew": jnp.float32(0),
      ...       "terminated": jnp.bool_(False), "truncated": jnp.bool_(False)}
      >>> rb = RateLimitedBuffer(jaxbuf.ReplayBuffer.create(ex, 8), MinSize(2))
      >>> for _ in range(4):
      ...     _ = rb.insert(ex)
      >>> _ = rb.sample(2, timeout=1.0)
      >>> s = rb.stats()
      >>> s.inserted_rows, s.sampled_rows, s.size, s.samples_per_insert
      (4, 2, 4, 0.5)
    """

    inserted_rows: int
    insert_calls: int
    sampled_rows: int
    sample_calls: int
    insert_blocked_s: float
    sample_blocked_s: float
    insert_timeouts: int
    sample_timeouts: int
    size: int
    diff: float
    closed: bool

    @property
    def samples_per_insert(self) -> float:
        """Observed ratio ``sampled_rows / inserted_rows`` (0 before the first insert)."""
        return self.sampled_rows / self.inserted_rows if self.inserted_rows else 0.0
