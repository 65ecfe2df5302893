"""Rate limiters: when an insert or a sample may proceed, as pure state machines.

A limiter is an immutable value holding three counters: ``inserts`` (rows inserted so far),
``samples`` (rows sampled so far) and ``deletes`` (rows that left the buffer: overwritten by
a full circular buffer, or popped by :class:`Queue`). ``size = inserts - deletes``.

* ``can_insert(n)`` / ``can_sample(n)`` say whether a request of ``n`` rows may proceed now;
* ``on_insert(n)`` / ``on_sample(n)`` / ``on_delete(n)`` return the limiter after it did
  (they never block and never check: the owner waits for ``can_*`` first).

Every limiter is one rule with four parameters, ``samples_per_insert`` (``spi``),
``min_size_to_sample``, ``min_diff`` and ``max_diff``, over the *diff*
``D = inserts * spi - samples`` (how far the sampling side is behind the target ratio):

* an insert of ``n`` rows may proceed when it leaves the buffer at or below
  ``min_size_to_sample`` rows (``size + n <= min_size_to_sample``), or when it leaves ``D``
  inside the band from above: ``(inserts + n) * spi - samples <= max_diff``;
* a sample of ``n`` rows may proceed when ``size >= min_size_to_sample`` and it leaves ``D``
  inside the band from below: ``inserts * spi - (samples + n) >= min_diff``.

So a caller blocks exactly when proceeding would take ``D`` out of
``[min_diff, max_diff]``. Once the buffer has held ``min_size_to_sample`` rows, ``D`` stays in
that band for good. The three public limiters only choose the parameters (Reverb's design):

=========================  ======  ==================  =====================  ================
limiter                    spi     min_size_to_sample  min_diff               max_diff
=========================  ======  ==================  =====================  ================
``MinSize(n)``             1       n                   -inf                   +inf
``SampleToInsertRatio``    spi     m                   ``spi * m - error``    ``spi * m + error``
``Queue(n)``               1       1                   0                      n
=========================  ======  ==================  =====================  ================
"""

from __future__ import annotations

import dataclasses
import math

from jaxbuf.errors import ConfigError, InputError, message

__all__ = ["Limiter", "MinSize", "Queue", "SampleToInsertRatio"]


@dataclasses.dataclass(frozen=True)
class Limiter:
    """The rule shared by every limiter (see the module docstring); immutable.

    Attributes:
      samples_per_insert: target ratio of sampled rows to inserted rows.
      min_size_to_sample: no sample proceeds before the buffer holds this many rows.
      min_diff, max_diff: the band of ``inserts * samples_per_insert - samples``.
      inserts, samples, deletes: the counters.

    Example:
      >>> from jaxbuf.concurrent import Limiter
      >>> lim = Limiter(1.0, min_size_to_sample=2, min_diff=-1.0, max_diff=3.0)
      >>> lim.can_sample(1), lim.can_insert(2)
      (False, True)
      >>> lim = lim.on_insert(2)
      >>> lim.size, lim.diff, lim.can_sample(3), lim.can_sample(4)
      (2, 2.0, True, False)
    """

    samples_per_insert: float
    min_size_to_sample: int
    min_diff: float
    max_diff: float
    inserts: int = 0
    samples: int = 0
    deletes: int = 0

    @property
    def size(self) -> int:
        """Rows in the buffer according to the limiter: ``inserts - deletes``."""
        return self.inserts - self.deletes

    @property
    def diff(self) -> float:
        """``inserts * samples_per_insert - samples``."""
        return self.inserts * self.samples_per_insert - self.samples

    @property
    def pops_on_sample(self) -> bool:
        """Whether a sample removes what it returns (true for :class:`Queue` only)."""
        return False

    # ------------------------------------------------------------------ the rule
    def can_insert(self, n: int) -> bool:
        """Whether inserting ``n`` rows may proceed now."""
        _check_count(type(self).__name__ + ".can_insert", n)
        if self.size + n <= self.min_size_to_sample:
            return True
        return (self.inserts + n) * self.samples_per_insert - self.samples <= self.max_diff

    def can_sample(self, n: int) -> bool:
        """Whether sampling ``n`` rows may proceed now."""
        _check_count(type(self).__name__ + ".can_sample", n)
        if self.size < self.min_size_to_sample:
            return False
        return self.inserts * self.samples_per_insert - (self.samples + n) >= self.min_diff

    def on_insert(self, n: int) -> Limiter:
        """The limiter after ``n`` rows were inserted."""
        _check_count(type(self).__name__ + ".on_insert", n)
        return dataclasses.replace(self, inserts=self.inserts + n)

    def on_sample(self, n: int) -> Limiter:
        """The limiter after ``n`` rows were sampled (and, for a queue, removed)."""
        _check_count(type(self).__name__ + ".on_sample", n)
        return dataclasses.replace(self, samples=self.samples + n)

    def on_delete(self, n: int) -> Limiter:
        """The limiter after ``n`` rows left the buffer (overwritten); ``n`` may be 0."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise InputError(
                message(type(self).__name__ + ".on_delete", f"n must be an int >= 0, got {n!r}")
            )
        return dataclasses.replace(self, deletes=self.deletes + n)

    # ------------------------------------------------------------------ progress
    def always_progresses(self, insert_rows: int, batch_size: int) -> bool:
        """Whether inserts of ``insert_rows`` and samples of ``batch_size`` can never block
        each other for ever (some side can always proceed); ``0`` means "no such request".

        False means some reachable state blocks both sides at once: pick a wider band (a
        larger ``error_buffer`` or queue) or smaller requests.
        """
        spi, k, b = self.samples_per_insert, insert_rows, batch_size
        if k > 0 and self.min_size_to_sample > 0:
            # Before the first sample every sample waits for min_size_to_sample rows; the
            # insert that crosses it, from min_size_to_sample - 1 rows, must fit the band.
            worst = (self.min_size_to_sample - 1 + k) * spi
            if self.min_size_to_sample - 1 + k > self.min_size_to_sample and worst > (
                self.max_diff
            ):
                return False
        # Afterwards both block when max_diff - k*spi < D < min_diff + b. With an integer
        # ratio and integer bounds D only takes integer values, so a gap of width < 2 holds
        # no reachable D.
        lattice = all(float(x).is_integer() for x in (spi, self.min_diff, self.max_diff))
        return self.max_diff - k * spi + (1 if lattice else 0) >= self.min_diff + b


def _check_count(where: str, n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(message(where, f"n must be an int >= 1, got {n!r}"))


def _int_option(where: str, name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(message(where, f"{name} must be an int >= {minimum}, got {value!r}"))
    return value


def _real_option(where: str, name: str, value, *, positive: bool) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and (value > 0 if positive else value >= 0)
    if not ok:
        bound = "> 0" if positive else ">= 0"
        raise ConfigError(message(where, f"{name} must be a finite number {bound}, got {value!r}"))
    return float(value)


def MinSize(min_size_to_sample: int) -> Limiter:  # noqa: N802 (a constructor, as in Reverb)
    """Samples wait until the buffer holds ``min_size_to_sample`` rows; then nothing blocks.

    Inserts never block.

    Example:
      >>> from jaxbuf.concurrent import MinSize
      >>> lim = MinSize(2)
      >>> lim.can_sample(1), lim.on_insert(2).can_sample(1), lim.can_insert(1000)
      (False, True, True)
    """
    n = _int_option("MinSize", "min_size_to_sample", min_size_to_sample, 1)
    return Limiter(1.0, n, -math.inf, math.inf)


def SampleToInsertRatio(  # noqa: N802 (a constructor, as in Reverb)
    samples_per_insert: float, min_size_to_sample: int, error_buffer: float
) -> Limiter:
    """Keep sampled rows per inserted row near ``samples_per_insert``.

    With ``D = inserts * samples_per_insert - samples`` and
    ``offset = samples_per_insert * min_size_to_sample``, ``D`` is held inside
    ``[offset - error_buffer, offset + error_buffer]``: an insert waits while it would push
    ``D`` above the top of that band, a sample waits while it would pull ``D`` below the
    bottom (or while the buffer holds fewer than ``min_size_to_sample`` rows). Over ``I``
    inserted rows the learner has therefore sampled ``I * samples_per_insert - offset`` rows,
    give or take ``error_buffer``.

    Args:
      samples_per_insert: target ratio (> 0), e.g. 8 for 8 sampled rows per inserted row.
      min_size_to_sample: rows to collect before the first sample (>= 1).
      error_buffer: half the width of the band, in sampled rows (>= 0). Inserts of ``k``
        rows and samples of ``b`` rows always make progress when
        ``error_buffer >= (k * samples_per_insert + b) / 2`` and
        ``error_buffer >= (k - 1) * samples_per_insert``
        (:meth:`Limiter.always_progresses`; the buffer raises on requests that could
        deadlock).

    Example:
      >>> from jaxbuf.concurrent import SampleToInsertRatio
      >>> lim = SampleToInsertRatio(2.0, min_size_to_sample=1, error_buffer=2.0)
      >>> lim.min_diff, lim.max_diff
      (0.0, 4.0)
      >>> lim = lim.on_insert(1)  # D = 1 * 2.0 - 0 = 2
      >>> lim.can_sample(2), lim.can_sample(3), lim.can_insert(1), lim.can_insert(2)
      (True, False, True, False)
    """
    where = "SampleToInsertRatio"
    spi = _real_option(where, "samples_per_insert", samples_per_insert, positive=True)
    m = _int_option(where, "min_size_to_sample", min_size_to_sample, 1)
    err = _real_option(where, "error_buffer", error_buffer, positive=False)
    offset = spi * m
    return Limiter(spi, m, offset - err, offset + err)


@dataclasses.dataclass(frozen=True)
class _QueueLimiter(Limiter):
    @property
    def pops_on_sample(self) -> bool:
        return True

    def on_sample(self, n: int) -> Limiter:
        _check_count("Queue.on_sample", n)
        return dataclasses.replace(self, samples=self.samples + n, deletes=self.deletes + n)


def Queue(max_size: int) -> Limiter:  # noqa: N802 (a constructor, as in Reverb)
    """A FIFO: every inserted row is sampled exactly once, oldest first.

    An insert waits while the queue would hold more than ``max_size`` rows; a sample of
    ``n`` waits until ``n`` rows are queued, and removes them (``pops_on_sample``).

    Example:
      >>> from jaxbuf.concurrent import Queue
      >>> q = Queue(2)
      >>> q.can_insert(2), q.can_insert(3)
      (True, False)
      >>> q = q.on_insert(2)
      >>> q.can_sample(2), q.on_sample(2).size
      (True, 0)
    """
    n = _int_option("Queue", "max_size", max_size, 1)
    return _QueueLimiter(1.0, 1, 0.0, float(n))
