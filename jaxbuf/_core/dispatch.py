"""Eager calls of buffer methods run as one compiled computation.

Called eagerly (no argument is a tracer), a JAX function runs primitive by primitive: each
primitive is compiled for its shapes on first use, and a ``lax.scan``/``lax.cond`` over a
bound method is traced and compiled again on every call. For a buffer method that is dozens
of small programs, compiled again and again (docs/design.md, "Eager dispatch").
:func:`compiled_when_eager` routes such calls through ``jax.jit`` instead: one compilation
per buffer structure, static arguments and input shapes, then one dispatch per call.

Traced calls (under ``jit``, ``vmap``, ``grad``, ``lax.scan``) and calls traced by
:func:`jaxbuf.checked` run the method's body directly, so what an outer transformation sees
is exactly the method's own operations.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import jax

from jaxbuf._core.checks import checking, is_traced

F = TypeVar("F", bound=Callable[..., Any])


def compiled_when_eager(static_argnames: Sequence[str] = ()) -> Callable[[F], F]:
    """Decorate a pure method so that an eager call runs it under ``jax.jit``.

    Args:
      static_argnames: the method's non-array parameters (batch sizes, field names, flags);
        they must be hashable and are part of the compiled function's cache key.

    The method must be pure and must not depend on concrete values (checks that raise on
    concrete values belong in a public wrapper that calls the decorated method).
    """

    def decorate(method: F) -> F:
        jitted = jax.jit(method, static_argnames=tuple(static_argnames))

        @functools.wraps(method)
        def wrapper(self, *args, **kwargs):
            if checking() or is_traced(self, args, kwargs):
                return method(self, *args, **kwargs)
            return jitted(self, *args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
