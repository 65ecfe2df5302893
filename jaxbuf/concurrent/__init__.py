"""Rate-limited replay shared by actor and learner threads.

:class:`RateLimitedBuffer` owns one jaxbuf buffer state on the host: actor threads
``insert`` rows, a learner thread ``sample``\\ s batches, and a limiter decides who waits so
that the replay ratio does not drift with machine speed. Limiters (pure state machines):
:func:`MinSize`, :func:`SampleToInsertRatio`, :func:`Queue`.

Example:
    >>> import jax.numpy as jnp, jaxbuf
    >>> from jaxbuf.concurrent import RateLimitedBuffer, SampleToInsertRatio
    >>> ex = {"obs": jnp.zeros(3), "act": jnp.int32(0), "rew": jnp.float32(0),
    ...       "terminated": jnp.bool_(False), "truncated": jnp.bool_(False)}
    >>> rb = RateLimitedBuffer(jaxbuf.ReplayBuffer.create(ex, 64),
    ...                        SampleToInsertRatio(2.0, min_size_to_sample=4, error_buffer=8))
    >>> for _ in range(4):
    ...     _ = rb.insert(ex)
    >>> batch, idx = rb.sample(4, timeout=1.0)
    >>> rb.stats().sampled_rows, rb.stats().inserted_rows
    (4, 4)
"""

from jaxbuf.concurrent.errors import BufferClosedError, RateLimiterTimeout
from jaxbuf.concurrent.limiters import Limiter, MinSize, Queue, SampleToInsertRatio
from jaxbuf.concurrent.rate_limited import RateLimitedBuffer
from jaxbuf.concurrent.stats import Stats

__all__ = [
    "BufferClosedError",
    "Limiter",
    "MinSize",
    "Queue",
    "RateLimitedBuffer",
    "RateLimiterTimeout",
    "SampleToInsertRatio",
    "Stats",
]
