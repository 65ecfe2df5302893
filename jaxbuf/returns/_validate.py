"""Trace-time checks and layout handling for the rollout-array return functions.

All checks look only at static shapes and dtypes, so they run once per trace and cost nothing
inside ``jit``. Failures raise ``AssertionError`` (from chex) or :class:`jaxbuf.InputError` (a
``ValueError``) with a message that names the function, the argument, what was expected and what
was given.
"""

from __future__ import annotations

from collections.abc import Mapping

import chex
import jax.numpy as jnp
import numpy as np

from jaxbuf.errors import InputError


def _layout(time_major: bool) -> str:
    return "[T, B] (time-major)" if time_major else "[B, T] (batch-major)"


def check_rollout(
    fn: str,
    time_major: bool,
    floats: Mapping[str, chex.Array],
    flags: Mapping[str, chex.Array],
) -> None:
    """Checks one rollout's arrays.

    The first entry of ``floats`` is the reference array (``rewards``): it must have rank 1
    (``[T]``) or 2 (``[T, B]``, or ``[B, T]`` with ``time_major=False``; rank 1 is accepted in
    either mode) and ``T >= 1``. Every other array must have exactly its shape. ``floats`` must
    have a floating dtype; ``flags`` (``terminated``, ``truncated``) may be boolean, integer or
    floating (non-zero means set).
    """
    names = list(floats)
    ref_name = names[0]
    ref = floats[ref_name]
    expected_ranks = {1, 2}
    chex.assert_rank(
        ref,
        expected_ranks,
        custom_message=(
            f"{fn}: `{ref_name}` must be [T] or {_layout(time_major)}, got shape {jnp.shape(ref)}"
        ),
    )
    time_axis = 0 if time_major or jnp.ndim(ref) == 1 else 1
    if jnp.shape(ref)[time_axis] < 1:
        raise InputError(
            f"jaxbuf: {fn}: `{ref_name}` needs at least one time step, got shape {jnp.shape(ref)} "
            f"with layout {_layout(time_major)}"
        )
    for name, value in {**floats, **flags}.items():
        if jnp.shape(value) != jnp.shape(ref):
            raise InputError(
                f"jaxbuf: {fn}: `{name}` must have the shape of `{ref_name}` {jnp.shape(ref)}, "
                f"got {jnp.shape(value)}"
            )
    for name, value in floats.items():
        chex.assert_type(
            value,
            float,
            custom_message=f"{fn}: `{name}` must be floating, got dtype {jnp.result_type(value)}",
        )
    for name, value in flags.items():
        dtype = jnp.result_type(value)
        if not (
            dtype == np.bool_
            or jnp.issubdtype(dtype, jnp.integer)
            or jnp.issubdtype(dtype, jnp.floating)
        ):
            raise InputError(
                f"jaxbuf: {fn}: `{name}` must be boolean or numeric, got dtype {dtype}"
            )


def check_coefficient(fn: str, name: str, value: chex.Numeric, shape: tuple[int, ...]) -> None:
    """Checks that a discount/lambda is a scalar or broadcasts to the rollout ``shape``."""
    value_shape = jnp.shape(value)
    try:
        broadcast = np.broadcast_shapes(value_shape, shape)
    except ValueError:
        broadcast = None
    if broadcast != shape:
        raise InputError(
            f"jaxbuf: {fn}: `{name}` must be a scalar or broadcast to the rollout shape {shape}, "
            f"got shape {value_shape}"
        )


def check_n_step(fn: str, n: int) -> None:
    """Checks the static window length of n-step returns."""
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise InputError(f"jaxbuf: {fn}: `n` must be a Python int >= 1, got {n!r}")


def to_time_major(x: chex.Array, time_major: bool) -> chex.Array:
    """Moves the time axis to the front (no-op for time-major or rank-1 input)."""
    return x if time_major or x.ndim < 2 else jnp.swapaxes(x, 0, 1)


from_time_major = to_time_major  # swapping the first two axes is its own inverse
