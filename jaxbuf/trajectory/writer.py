"""Background writer: one daemon thread running submitted tasks strictly in FIFO order.

Errors are never swallowed, and a failed write is never forgotten. A task submitted with a
``key`` that fails stays *pending*: :meth:`BackgroundWriter.retry` runs it again, and
:meth:`BackgroundWriter.flush` (and :meth:`BackgroundWriter.close`) raise
:class:`~jaxbuf.errors.TrajectoryWriteError` naming every pending key for as long as any
remains, until a retry succeeds or the caller :meth:`~BackgroundWriter.discard`\\ s it.
:meth:`BackgroundWriter.check` raises each new failure once (it is what ``add`` and ``sample``
call). Later tasks still run after a failure, so one failed file does not stop the others.
``close()`` drains the queue and stops the thread; it is idempotent, and a later ``submit``
starts a fresh thread. Writers still open at interpreter exit are drained by an ``atexit``
hook, so queued data is not lost when a script forgets ``close()``.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import weakref
from collections.abc import Callable, Hashable

from jaxbuf.errors import TrajectoryWriteError

__all__ = ["BackgroundWriter"]

_log = logging.getLogger("jaxbuf.trajectory")
_STOP = object()
_LIVE: weakref.WeakSet[BackgroundWriter] = weakref.WeakSet()


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class BackgroundWriter:
    """FIFO task runner on one background thread (see the module docstring)."""

    def __init__(self, name: str = "jaxbuf-writer") -> None:
        self._name = name
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._cond = threading.Condition()
        self._outstanding = 0
        self._errors: list[tuple[str, BaseException]] = []
        self._failed: dict[Hashable, tuple[Callable[[], None], str, BaseException]] = {}
        self._thread: threading.Thread | None = None

    @property
    def pending(self) -> int:
        """Number of submitted tasks that have not finished yet."""
        with self._cond:
            return self._outstanding

    def failed(self) -> dict[Hashable, str]:
        """``key -> "description: error"`` of every failed task still pending."""
        with self._cond:
            return {k: f"{d}: {_describe(e)}" for k, (_, d, e) in self._failed.items()}

    def submit(
        self, task: Callable[[], None], description: str, key: Hashable | None = None
    ) -> None:
        """Queue ``task``; ``description`` names it in error messages. Never blocks.

        With a ``key``, a failure keeps the task pending until it succeeds on a retry (or
        a later task with the same key succeeds) or is discarded.
        """
        with self._cond:
            self._outstanding += 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, args=(self._queue,), name=self._name, daemon=True
                )
                self._thread.start()
                _LIVE.add(self)
            self._queue.put((task, description, key))

    def _run(self, tasks: queue.SimpleQueue) -> None:
        while True:
            item = tasks.get()
            if item is _STOP:
                return
            task, description, key = item
            try:
                task()
            except BaseException as exc:  # recorded; re-raised to the caller by check()
                with self._cond:
                    self._errors.append((description, exc))
                    if key is not None:
                        self._failed[key] = (task, description, exc)
            else:
                if key is not None:
                    with self._cond:
                        self._failed.pop(key, None)
            finally:
                with self._cond:
                    self._outstanding -= 1
                    self._cond.notify_all()

    def retry(self) -> int:
        """Queue every pending failed task again; returns how many."""
        with self._cond:
            items = [(task, desc, key) for key, (task, desc, _) in self._failed.items()]
        for task, desc, key in items:
            self.submit(task, desc, key)
        return len(items)

    def discard(self, keys: list[Hashable]) -> None:
        """Give up the pending failed tasks ``keys`` (they will not be retried); errors not
        yet reported are dropped with them."""
        with self._cond:
            self._errors = []
            for key in keys:
                self._failed.pop(key, None)

    def check(self) -> None:
        """Raise (once) the errors of tasks that failed since the last check."""
        with self._cond:
            errors, self._errors = self._errors, []
        if not errors:
            return
        first_desc, first_exc = errors[0]
        more = f" (and {len(errors) - 1} more failed writes)" if len(errors) > 1 else ""
        raise TrajectoryWriteError(
            f"jaxbuf: background write failed: {first_desc}: {_describe(first_exc)}{more}"
        ) from first_exc

    def wait(self) -> None:
        """Block until every task submitted so far has run (raises nothing)."""
        with self._cond:
            while self._outstanding:
                self._cond.wait()

    def raise_pending(self, hint: str = "") -> None:
        """Raise TrajectoryWriteError naming every pending failed task, if any."""
        with self._cond:
            failed = list(self._failed.items())
            if failed:
                self._errors = []
        if not failed:
            return
        lines = "; ".join(f"{d}: {_describe(e)}" for _, (_, d, e) in failed[:5])
        more = f" (and {len(failed) - 5} more)" if len(failed) > 5 else ""
        err = TrajectoryWriteError(
            f"{len(failed)} background write(s) are not durable: {lines}{more}{hint}"
        )
        err.keys = [key for key, _ in failed]
        raise err from failed[0][1][2]

    def flush(self, hint: str = "") -> None:
        """Block until every task submitted so far has run, then raise the pending failures
        (every call, as long as any remains) or else the new errors (:meth:`check`)."""
        self.wait()
        self.raise_pending(hint)
        self.check()

    def close(self, hint: str = "") -> None:
        """Drain the queue, stop the thread, then :meth:`flush`'s checks. Idempotent."""
        with self._cond:
            thread, self._thread = self._thread, None
            if thread is not None:  # the old thread drains its own queue up to _STOP
                self._queue.put(_STOP)
                self._queue = queue.SimpleQueue()
        if thread is not None:
            thread.join()
            _LIVE.discard(self)
        self.raise_pending(hint)
        self.check()


@atexit.register
def _drain_at_exit() -> None:
    for writer in list(_LIVE):
        try:
            writer.close()
        except TrajectoryWriteError as exc:
            _log.error("jaxbuf: %s", exc)
