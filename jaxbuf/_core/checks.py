"""Run-time checks inside ``jit``: off by default, raised under :func:`checked`.

Conditions only known at run time (sampling an empty buffer, an index out of range, a
``buffer_id`` out of range, a ``done`` that disagrees with ``terminated | truncated``) have
one documented result each in normal mode. Wrapping a function with :func:`checked` traces
it with ``jax.experimental.checkify`` checks inserted, and raises instead.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import checkify

from jaxbuf.errors import InputError

_state = threading.local()


def checking() -> bool:
    """Whether the function being traced is wrapped by :func:`checked`."""
    return getattr(_state, "on", False)


def is_traced(*values: Any) -> bool:
    """Whether any of ``values`` (pytrees allowed) holds a tracer, i.e. is only known at run
    time; concrete values can be checked eagerly and raise at once."""
    return any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(values))


def runtime_check(pred: jax.Array, msg: str) -> None:
    """Assert ``pred`` at run time when tracing under :func:`checked`; a no-op otherwise."""
    if checking():
        checkify.check(pred, msg)


def global_index(index: Any, maxsize: int) -> jax.Array:
    """Integer slot indices as int32, reduced modulo ``maxsize``.

    A non-integer dtype raises ``TypeError`` at trace time; an index outside
    ``[0, maxsize)`` is taken modulo ``maxsize`` (the documented result), and raises under
    :func:`checked`.
    """
    index = jnp.asarray(index)
    if not jnp.issubdtype(index.dtype, jnp.integer):
        raise InputError(f"jaxbuf: indices must be integers, got dtype {index.dtype}")
    runtime_check(
        jnp.all((index >= 0) & (index < maxsize)),
        f"jaxbuf: index out of range [0, {maxsize})",
    )
    return jnp.mod(index.astype(jnp.int32), maxsize)


def checked(fn: Callable) -> Callable:
    """Return ``fn`` jitted with jaxbuf's run-time checks enabled; a failed check raises.

    Pass the plain (un-jitted) function: the wrapper traces and jits it itself.

    Example:
      Under plain ``jit`` a row with an out-of-range buffer id is dropped; checked, it raises:

      >>> import jax, jax.numpy as jnp
      >>> import jaxbuf
      >>> ex = dict(obs=jnp.zeros(()), act=0, rew=jnp.float32(0), terminated=False,
      ...           truncated=False)
      >>> buf = jaxbuf.ReplayBuffer.create(ex, 4, buffer_num=2)
      >>> rows = jax.tree.map(lambda x: jnp.asarray(x)[None], ex)
      >>> add = jaxbuf.checked(lambda b, r, ids: b.add(r, ids))
      >>> try:
      ...     add(buf, rows, jnp.array([2]))
      ... except Exception as err:  # checkify's JaxRuntimeError
      ...     print(type(err).__name__, str(err).splitlines()[0])
      JaxRuntimeError jaxbuf: buffer_ids out of range [0, 2) ...
    """

    def traced(*args, **kwargs):
        prev = checking()
        _state.on = True
        try:
            return fn(*args, **kwargs)
        finally:
            _state.on = prev

    run = jax.jit(checkify.checkify(traced, errors=checkify.user_checks))

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        err, out = run(*args, **kwargs)
        err.throw()
        return out

    return wrapper
