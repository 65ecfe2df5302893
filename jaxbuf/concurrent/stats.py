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
