"""The errors a :class:`~jaxbuf.concurrent.RateLimitedBuffer` raises while waiting."""

from __future__ import annotations

from jaxbuf.errors import JaxbufError

__all__ = ["BufferClosedError", "RateLimiterTimeout"]


class RateLimiterTimeout(JaxbufError, TimeoutError):
    """An ``insert`` or ``sample`` waited ``timeout`` seconds and the limiter still blocked it.

    Nothing was inserted or sampled; the call may be retried. Also a ``TimeoutError``.
    """


class BufferClosedError(JaxbufError, RuntimeError):
    """The buffer was closed: raised by every waiting call when :meth:`close` runs, and by
    every later ``insert``, ``sample`` or ``update_weight``. Also a ``RuntimeError``."""
