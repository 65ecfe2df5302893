"""Background writer: one daemon thread running submitted tasks strictly in FIFO order.

Errors are never swallowed: a failing task is recorded and re-raised, as
:class:`~jaxbuf.errors.TrajectoryWriteError`, by the next :meth:`check`,
:meth:`flush` or :meth:`close` (later tasks still run, so one failed file does not stop the
others). ``close()`` drains the queue and stops the thread; it is idempotent, and a later
``submit`` starts a fresh thread. Writers still open at interpreter exit are drained by an
``atexit`` hook, so queued data is not lost when a script forgets ``close()``.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import weakref
from collections.abc import Callable

from jaxbuf.errors import TrajectoryWriteError

__all__ = ["BackgroundWriter"]

_log = logging.getLogger("jaxbuf.trajectory")
_STOP = object()
_LIVE: weakref.WeakSet[BackgroundWriter] = weakref.WeakSet()


class BackgroundWriter:
    """FIFO task runner on one background thread (see the module docstring)."""

    def __init__(self, name: str = "jaxbuf-writer") -> None:
        self._name = name
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._cond = threading.Condition()
        self._outstanding = 0
        self._errors: list[tuple[str, BaseException]] = []
        self._thread: threading.Thread | None = None

    @property
    def pending(self) -> int:
        """Number of submitted tasks that have not finished yet."""
        with self._cond:
            return self._outstanding

    def submit(self, task: Callable[[], None], description: str) -> None:
        """Queue ``task``; ``description`` names it in error messages. Never blocks."""
        with self._cond:
            self._outstanding += 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, args=(self._queue,), name=self._name, daemon=True
                )
                self._thread.start()
                _LIVE.add(self)
            self._queue.put((task, description))

    def _run(self, tasks: queue.SimpleQueue) -> None:
        while True:
            item = tasks.get()
            if item is _STOP:
                return
            task, description = item
            try:
                task()
            except BaseException as exc:  # recorded; re-raised to the caller by check()
                with self._cond:
                    self._errors.append((description, exc))
            finally:
                with self._cond:
                    self._outstanding -= 1
                    self._cond.notify_all()

    def check(self) -> None:
        """Raise (once) the errors of tasks that failed since the last check."""
        with self._cond:
            errors, self._errors = self._errors, []
        if not errors:
            return
        first_desc, first_exc = errors[0]
        more = f" (and {len(errors) - 1} more failed writes)" if len(errors) > 1 else ""
        raise TrajectoryWriteError(
            f"background write failed: {first_desc}: {type(first_exc).__name__}: {first_exc}{more}"
        ) from first_exc

    def flush(self) -> None:
        """Block until every task submitted so far has run, then :meth:`check`."""
        with self._cond:
            while self._outstanding:
                self._cond.wait()
        self.check()

    def close(self) -> None:
        """Drain the queue, stop the thread, then :meth:`check`. Idempotent."""
        with self._cond:
            thread, self._thread = self._thread, None
            if thread is not None:  # the old thread drains its own queue up to _STOP
                self._queue.put(_STOP)
                self._queue = queue.SimpleQueue()
        if thread is not None:
            thread.join()
            _LIVE.discard(self)
        self.check()


@atexit.register
def _drain_at_exit() -> None:
    for writer in list(_LIVE):
        try:
            writer.close()
        except TrajectoryWriteError as exc:
            _log.error("jaxbuf: %s", exc)
