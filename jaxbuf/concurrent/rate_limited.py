"""``RateLimitedBuffer``: one buffer state shared by actor and learner threads.

The pure buffers of jaxbuf return a new state from every ``add``; a program whose actors and
learner run at their own pace needs one place that owns the current state, serialises the
updates and decides who waits. :class:`RateLimitedBuffer` is that place, for threads of one
Python process:

* one lock guards the state; ``insert`` runs the buffer's compiled add with the state
  donated (``jax.jit(..., donate_argnums=0)``), so an insert of ``k`` rows costs ``O(k)``
  and never copies the storage; ``sample`` runs the compiled sample (``O(batch_size)``);
* a :mod:`~jaxbuf.concurrent.limiters` limiter decides whether a call may proceed; a caller
  that may not waits on a condition variable (no polling) until the other side makes
  progress, its ``timeout`` runs out (:class:`RateLimiterTimeout`) or :meth:`close` runs
  (:class:`BufferClosedError`);
* :attr:`RateLimitedBuffer.state` is a consistent copy of the state, for checkpoints
  (``jaxbuf.save``) while the threads run;
* :meth:`RateLimitedBuffer.wait_until` blocks until the limiter's counters satisfy a
  condition, which is how a program fixes the order of its inserts and samples (and so
  makes an asynchronous run reproducible; see the method).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxbuf._core.base import Buffer
from jaxbuf.concurrent.errors import BufferClosedError, RateLimiterTimeout
from jaxbuf.concurrent.limiters import Limiter
from jaxbuf.concurrent.stats import Stats
from jaxbuf.errors import ConfigError, InputError, message

__all__ = ["RateLimitedBuffer"]

_NAME = "RateLimitedBuffer"


def _add(buf, rows, ids):
    new, result = buf.add_rows(rows, ids)
    return new, result, new.size


def _sample(buf, key, batch_size):
    return buf.sample(key, batch_size)


def _read(buf, index):
    return buf[index], index


def _update(buf, index, weight):
    return buf.update_weight(index, weight)


class RateLimitedBuffer:
    """A thread-safe owner of a jaxbuf buffer whose inserts and samples obey a rate limiter.

    Args:
      buf: any jaxbuf buffer (``ReplayBuffer``, ``VectorReplayBuffer``, prioritized, HER,
        cached). It is copied once, so ``buf`` itself stays usable; rows it already holds
        count as inserted before any sample.
      limiter: a :func:`~jaxbuf.concurrent.MinSize`,
        :func:`~jaxbuf.concurrent.SampleToInsertRatio` or :func:`~jaxbuf.concurrent.Queue`
        limiter (or any :class:`~jaxbuf.concurrent.Limiter` state, e.g. one saved with a
        checkpoint).
      seed: seed of the internal PRNG key that ``sample`` splits on every call.

    With :func:`~jaxbuf.concurrent.Queue` the buffer keeps a FIFO of the slots written by
    ``insert``: ``sample(n)`` pops the ``n`` oldest and returns exactly those rows, so every
    inserted row is returned once, in insertion order (rows of one ``insert`` in row order,
    ``insert`` calls in the order they took the lock). The buffer only stores the rows; its
    own size keeps growing as a circular buffer's does, and a popped row stays in its slot
    until it is overwritten. The queue's ``max_size`` must fit the smallest sub-buffer, so a
    queued row is never overwritten before it is sampled.

    Example:
      >>> import jax.numpy as jnp, jaxbuf
      >>> from jaxbuf.concurrent import Queue, RateLimitedBuffer
      >>> ex = {"obs": jnp.zeros(3), "act": jnp.int32(0), "rew": jnp.float32(0),
      ...       "terminated": jnp.bool_(False), "truncated": jnp.bool_(False)}
      >>> rb = RateLimitedBuffer(jaxbuf.ReplayBuffer.create(ex, 8), Queue(4))
      >>> for _ in range(3):
      ...     _ = rb.insert(ex)
      >>> batch, idx = rb.sample(2, timeout=1.0)  # the two oldest rows, popped
      >>> idx.tolist(), rb.limiter.size, rb.stats().sampled_rows
      ([0, 1], 1, 2)
    """

    def __init__(self, buf: Any, limiter: Limiter, *, seed: int = 0) -> None:
        if not isinstance(buf, Buffer):
            raise ConfigError(
                message(_NAME, f"buf must be a jaxbuf buffer, got {type(buf).__name__}")
            )
        if not isinstance(limiter, Limiter):
            raise ConfigError(
                message(
                    _NAME,
                    "limiter must be MinSize(...), SampleToInsertRatio(...) or Queue(...), "
                    f"got {type(limiter).__name__}",
                )
            )
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
            raise ConfigError(message(_NAME, f"seed must be an int, got {seed!r}"))
        size = len(buf)
        if limiter.min_size_to_sample > buf.maxsize:
            raise ConfigError(
                message(
                    _NAME,
                    f"the limiter's min_size_to_sample={limiter.min_size_to_sample} exceeds the "
                    f"buffer's {buf.maxsize} slots; no sample could ever proceed",
                )
            )
        if limiter.pops_on_sample:
            _check_queue(buf, limiter, size)
        elif limiter.inserts == 0 and size > 0:
            limiter = limiter.on_insert(size)
        self._limiter = limiter
        self._state = jax.tree.map(jnp.copy, buf)
        self._template = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), buf)
        self._buffer_ids = getattr(buf, "buffer_num", None) or buf.cached_buffer_num
        self._size = size
        self._fifo: collections.deque[int] = collections.deque()
        self._key = jax.random.key(int(seed))
        self._lock = threading.Lock()
        self._insert_ready = threading.Condition(self._lock)
        self._sample_ready = threading.Condition(self._lock)
        self._progress = threading.Condition(self._lock)  # any insert, sample or close
        self._closed = False
        self._largest_insert = 0
        self._largest_sample = 0
        self._counts = collections.Counter()
        self._blocked = {"insert": 0.0, "sample": 0.0}
        self._add = jax.jit(_add, donate_argnums=0)
        self._sample = jax.jit(_sample, static_argnums=2)
        self._read = jax.jit(_read)
        self._update = jax.jit(_update, donate_argnums=0)

    # ------------------------------------------------------------------ the two sides
    def insert(self, rows: dict, buffer_ids: Any = None, timeout: float | None = None) -> Any:
        """Add ``rows`` (as the buffer's ``add`` takes them) once the limiter allows it.

        Args:
          rows: a batch shaped like the buffer's example with a leading axis of ``k`` rows
            (``k == buffer_num`` when ``buffer_ids`` is None), or one transition for a
            one-sub-buffer buffer.
          buffer_ids: int[k] sub-buffer of each row, or None.
          timeout: seconds to wait for the limiter; None waits for ever, 0 does not wait.
        Returns:
          The buffer's add result (``index``, episode statistics) for the rows.
        Raises:
          RateLimiterTimeout: still blocked after ``timeout`` (nothing was inserted).
          BufferClosedError: the buffer is or gets closed.
          InputError: rows or ids that do not fit the buffer, or a request size that could
            block both sides for ever under this limiter.
        """
        where = f"{_NAME}.insert"
        checked, ids = self._template.check_batch(rows, buffer_ids)
        k = int(jax.tree.leaves(checked)[0].shape[0])
        if ids is not None:
            host = np.asarray(ids)
            if np.any((host < 0) | (host >= self._buffer_ids)):
                raise InputError(
                    message(where, f"buffer_ids must lie in [0, {self._buffer_ids}), got {host}")
                )
        deadline = _deadline(where, timeout)
        with self._lock:
            self._raise_if_closed(where)
            self._check_progress(where, max(self._largest_insert, k), self._largest_sample)
            self._largest_insert = max(self._largest_insert, k)
            self._wait(self._insert_ready, lambda: self._limiter.can_insert(k), deadline, "insert")
            self._state, result, size = self._add(self._state, checked, ids)
            written = np.asarray(result.index)
            accepted = int(np.sum(written >= 0))
            size = int(size)
            limiter = self._limiter.on_insert(accepted) if accepted else self._limiter
            if limiter.pops_on_sample:
                self._fifo.extend(written[written >= 0].tolist())
            else:
                limiter = limiter.on_delete(max(0, accepted - (size - self._size)))
            self._limiter, self._size = limiter, size
            self._counts["inserted_rows"] += accepted
            self._counts["insert_calls"] += 1
            self._sample_ready.notify_all()
            self._progress.notify_all()
        return result

    def sample(self, batch_size: int, timeout: float | None = None) -> tuple[dict, jax.Array]:
        """``(batch, indices)`` of ``batch_size`` rows once the limiter allows it.

        Uniform (or prioritized) draws with the buffer's own ``sample`` and the internal key;
        with a :func:`~jaxbuf.concurrent.Queue` limiter the ``batch_size`` oldest queued rows.

        Raises:
          RateLimiterTimeout: still blocked after ``timeout`` seconds (nothing was sampled).
          BufferClosedError: the buffer is or gets closed.
          InputError: a bad ``batch_size``, or one that could block both sides for ever.
        """
        where = f"{_NAME}.sample"
        if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
            raise InputError(message(where, f"batch_size must be an int, got {batch_size!r}"))
        b = int(batch_size)
        if b < 1:
            raise InputError(message(where, f"batch_size must be >= 1, got {b}"))
        deadline = _deadline(where, timeout)
        with self._lock:
            self._raise_if_closed(where)
            self._check_progress(where, self._largest_insert, max(self._largest_sample, b))
            self._largest_sample = max(self._largest_sample, b)
            self._wait(self._sample_ready, lambda: self._limiter.can_sample(b), deadline, "sample")
            if self._limiter.pops_on_sample:
                slots = np.array([self._fifo.popleft() for _ in range(b)], np.int32)
                batch, indices = self._read(self._state, slots)
            else:
                self._key, key = jax.random.split(self._key)
                batch, indices = self._sample(self._state, key, b)
            # The next insert donates the state: finish reading it first.
            batch, indices = jax.block_until_ready((batch, indices))
            self._limiter = self._limiter.on_sample(b)
            self._counts["sampled_rows"] += b
            self._counts["sample_calls"] += 1
            self._insert_ready.notify_all()
            self._progress.notify_all()
        return batch, indices

    def update_weight(self, indices: Any, weights: Any) -> None:
        """Set the priorities of sampled slots (prioritized buffers only), e.g. to |TD error|.

        ``indices`` is an int array of shape ``(B,)`` from :meth:`sample`, ``weights``
        real values of the same shape. A slot that an insert overwrote since it was sampled
        gets the new priority all the same (its new row inherits it); a slot that holds no
        row is ignored.
        """
        where = f"{_NAME}.update_weight"
        if not hasattr(self._template, "update_weight"):
            raise InputError(
                message(
                    where,
                    "needs a prioritized buffer (PrioritizedReplayBuffer or "
                    f"PrioritizedVectorReplayBuffer), this one holds a "
                    f"{type(self._template).__name__}",
                )
            )
        idx = np.asarray(indices)
        w = np.asarray(weights)
        if not np.issubdtype(idx.dtype, np.integer) or idx.ndim != 1:
            raise InputError(
                message(where, f"indices must be int[B], got {idx.dtype} of shape {idx.shape}")
            )
        if w.shape != idx.shape or not np.issubdtype(w.dtype, np.number):
            raise InputError(
                message(
                    where,
                    f"weights must be real numbers of the indices' shape {idx.shape}, got "
                    f"{w.dtype} of shape {w.shape}",
                )
            )
        if not np.all(np.isfinite(w)):
            raise InputError(message(where, f"weights must be finite, got {w}"))
        if np.any((idx < 0) | (idx >= self._template.maxsize)):
            raise InputError(
                message(where, f"indices must lie in [0, {self._template.maxsize}), got {idx}")
            )
        with self._lock:
            self._raise_if_closed(where)
            self._state = self._update(
                self._state, jnp.asarray(idx, jnp.int32), jnp.asarray(w, jnp.float32)
            )

    def wait_until(
        self, predicate: Callable[[Limiter], bool], timeout: float | None = None
    ) -> Limiter:
        """Block until ``predicate(limiter)`` holds; return the limiter state that satisfied it.

        ``predicate`` receives the current immutable :class:`~jaxbuf.concurrent.Limiter`
        (counters ``inserts``, ``samples``, ``deletes``; ``can_insert(n)``,
        ``can_sample(n)``) and is evaluated under the buffer's lock now and after every
        insert, sample and :meth:`close`, so it must be cheap and must not call this buffer.

        **Fixed interleavings.** Which rows a sample sees normally depends on thread timing.
        A program that gives every insert a *turn* ``t = 0, 1, ...`` of ``k`` rows and makes
        turn ``t`` wait for ``lim.inserts >= t * k and not lim.can_sample(b)`` (every
        earlier turn done, and the learner has drawn every batch of ``b`` rows the limiter
        allows) fixes the order of all inserts and samples by the limiter's counts alone:
        with one seed, every sample returns the same rows in every run, however the threads
        are scheduled. This needs a limiter on which one side can always proceed
        (:meth:`~jaxbuf.concurrent.Limiter.always_progresses`), which the buffer enforces.

        Args:
          predicate: ``Limiter -> bool``.
          timeout: seconds to wait; None waits for ever, 0 does not wait.
        Returns:
          The limiter state for which ``predicate`` returned true.
        Raises:
          RateLimiterTimeout: the predicate is still false after ``timeout`` seconds.
          BufferClosedError: the buffer is or gets closed before the predicate holds.

        Example:
            >>> import jax.numpy as jnp, jaxbuf
            >>> from jaxbuf.concurrent import MinSize, RateLimitedBuffer
            >>> ex = {"obs": jnp.zeros(2), "act": jnp.int32(0), "rew": jnp.float32(0),
            ...       "terminated": jnp.bool_(False), "truncated": jnp.bool_(False)}
            >>> rb = RateLimitedBuffer(jaxbuf.ReplayBuffer.create(ex, 8), MinSize(1))
            >>> _ = rb.insert(ex)
            >>> rb.wait_until(lambda lim: lim.inserts >= 1, timeout=1.0).inserts
            1
        """
        where = f"{_NAME}.wait_until"
        if not callable(predicate):
            raise InputError(message(where, f"predicate must be callable, got {predicate!r}"))
        deadline = _deadline(where, timeout)
        with self._lock:
            while True:
                if predicate(self._limiter):
                    return self._limiter
                self._raise_if_closed(where)
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise RateLimiterTimeout(
                        message(where, f"the predicate is still false; {self._limiter}")
                    )
                self._progress.wait(remaining)

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Close the buffer: every waiting and later ``insert``/``sample``/``update_weight``
        raises :class:`BufferClosedError`. Idempotent; :attr:`state` and :meth:`stats`
        stay readable."""
        with self._lock:
            self._closed = True
            self._insert_ready.notify_all()
            self._sample_ready.notify_all()
            self._progress.notify_all()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` ran."""
        return self._closed

    def __enter__(self) -> RateLimitedBuffer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ snapshots
    @property
    def state(self) -> Any:
        """A copy of the buffer state as of one moment between two updates.

        A pure jaxbuf buffer of the given class, independent of later inserts (the live state
        is donated to every insert), so it can be saved with ``jaxbuf.save`` or a
        ``checkpoint_manager`` while the threads run. Costs one copy of the state.
        """
        with self._lock:
            return jax.block_until_ready(jax.tree.map(jnp.copy, self._state))

    @property
    def limiter(self) -> Limiter:
        """The limiter's current state (immutable; save it beside :attr:`state` to resume)."""
        with self._lock:
            return self._limiter

    def stats(self) -> Stats:
        """Counters and blocked time so far, as one consistent :class:`Stats`."""
        with self._lock:
            c, lim = self._counts, self._limiter
            return Stats(
                inserted_rows=c["inserted_rows"],
                insert_calls=c["insert_calls"],
                sampled_rows=c["sampled_rows"],
                sample_calls=c["sample_calls"],
                insert_blocked_s=self._blocked["insert"],
                sample_blocked_s=self._blocked["sample"],
                insert_timeouts=c["insert_timeouts"],
                sample_timeouts=c["sample_timeouts"],
                size=lim.size,
                diff=lim.diff,
                closed=self._closed,
            )

    # ------------------------------------------------------------------ internals
    def _raise_if_closed(self, where: str) -> None:
        if self._closed:
            raise BufferClosedError(message(where, "the buffer is closed"))

    def _check_progress(self, where: str, k: int, b: int) -> None:
        """Refuse a request if, with the largest request seen on the other side, some state
        would block both sides at once (nothing is recorded for a refused request)."""
        if not self._limiter.always_progresses(k, b):
            raise InputError(
                message(
                    where,
                    f"inserts of {k} rows and samples of {b} rows can leave both sides blocked "
                    f"for ever under this limiter (band [{self._limiter.min_diff}, "
                    f"{self._limiter.max_diff}] of inserts * {self._limiter.samples_per_insert}"
                    " - samples); widen the band (error_buffer, Queue max_size) or use "
                    "smaller requests",
                )
            )

    def _wait(
        self,
        ready: threading.Condition,
        allowed: Callable[[], bool],
        deadline: float | None,
        side: str,
    ) -> None:
        """Wait (lock held) until ``allowed()``; raise on close or timeout."""
        where = f"{_NAME}.{side}"
        if allowed():
            return
        start = time.monotonic()
        try:
            while True:
                self._raise_if_closed(where)
                if allowed():
                    return
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    self._counts[f"{side}_timeouts"] += 1
                    raise RateLimiterTimeout(
                        message(
                            where,
                            f"the rate limiter still blocks after the timeout; {self._limiter}",
                        )
                    )
                ready.wait(remaining)
        finally:
            self._blocked[side] += time.monotonic() - start


def _deadline(where: str, timeout: float | None) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout >= 0:
        raise InputError(message(where, f"timeout must be None or a number >= 0, got {timeout!r}"))
    return time.monotonic() + float(timeout)


def _check_queue(buf: Any, limiter: Limiter, size: int) -> None:
    from jaxbuf.cached import CachedReplayBuffer  # import here: cached imports the core

    if isinstance(buf, CachedReplayBuffer):
        raise ConfigError(
            message(
                _NAME,
                "a Queue limiter needs stable slots; a CachedReplayBuffer moves rows from its "
                "caches to main when an episode ends (use a ReplayBuffer or VectorReplayBuffer)",
            )
        )
    if size > 0 or limiter.inserts > 0:
        raise ConfigError(
            message(_NAME, f"a Queue limiter needs an empty buffer and limiter, got {size} rows")
        )
    smallest = int(np.min(np.diff(buf.subbuffer_edges)))
    if limiter.max_diff > smallest:
        raise ConfigError(
            message(
                _NAME,
                f"Queue max_size={int(limiter.max_diff)} exceeds the smallest sub-buffer "
                f"({smallest} slots): queued rows could be overwritten before they are sampled",
            )
        )
