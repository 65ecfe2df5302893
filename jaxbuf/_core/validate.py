"""Trace-time checks of buffer configuration and of added batches against the example.

Every error names the offending field, what was expected and what was given, so a
mistake is reported when the function is traced, never as silent corruption later.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxbuf.errors import ConfigError, message

REQUIRED_KEYS = ("obs", "act", "rew", "terminated", "truncated")
"""Keys every transition must have."""

FLAG_KEYS = ("terminated", "truncated")


def key_path_str(path: tuple) -> str:
    """Render a pytree key path such as ``('info', 'x')`` as ``info.x``."""
    return ".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def int_option(where: str, name: str, value: Any, minimum: int | None = None) -> int:
    """``value`` as a Python int, or :class:`~jaxbuf.errors.ConfigError` naming ``name``.

    Accepts Python and NumPy integers (not ``bool``) no smaller than ``minimum``.

    Example:
        >>> int_option("create", "size", 8, minimum=1)
        8
    """
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        raise ConfigError(
            message(where, f"{name} must be an int, got {type(value).__name__} {value!r}")
        )
    if minimum is not None and value < minimum:
        raise ConfigError(message(where, f"{name} must be >= {minimum}, got {value}"))
    return int(value)


def bool_option(where: str, name: str, value: Any) -> bool:
    """``value`` as a Python bool, or :class:`~jaxbuf.errors.ConfigError` naming ``name``."""
    if not isinstance(value, bool | np.bool_):
        raise ConfigError(
            message(where, f"{name} must be a bool, got {type(value).__name__} {value!r}")
        )
    return bool(value)


def check_config(size: int, buffer_num: int, stack_num: int, lockstep: bool = False) -> None:
    """Reject invalid constructor arguments with a :class:`~jaxbuf.errors.ConfigError`."""
    where = "create"
    bool_option(where, "lockstep", lockstep)
    int_option(where, "size", size, minimum=1)
    int_option(where, "buffer_num", buffer_num, minimum=1)
    int_option(where, "stack_num", stack_num, minimum=1)
    if buffer_num > size:
        raise ConfigError(
            message(where, f"buffer_num ({buffer_num}) must not exceed total_size ({size})")
        )


def check_example(example: Any) -> dict:
    """Check the reserved keys of an example transition; return it as a plain dict."""
    if not isinstance(example, Mapping):
        raise TypeError(
            f"jaxbuf: the example transition must be a dict, got {type(example).__name__}"
        )
    example = dict(example)
    missing = [k for k in REQUIRED_KEYS if k not in example]
    if missing:
        raise ValueError(f"jaxbuf: the example transition lacks the reserved key(s) {missing}")
    for key in FLAG_KEYS:
        if np.shape(example[key]) != ():
            raise ValueError(
                f"jaxbuf: field '{key}' must be a scalar flag per transition, "
                f"got shape {np.shape(example[key])}"
            )
    if "done" in example:
        _check_example_done(example.pop("done"), example)
    return example


def _check_example_done(done: Any, example: dict) -> None:
    """Accept an example's ``done`` that is a scalar bool equal to ``terminated | truncated``.

    ``done`` is always derived, never stored, so it is dropped; a ``jax.ShapeDtypeStruct`` (or
    a traced value) is checked for shape and dtype only.
    """
    where = "create"
    if np.shape(done) != () or jnp.result_type(done) != jnp.dtype(bool):
        raise ConfigError(
            message(
                where,
                "field 'done' of the example must be a scalar bool (it is derived as "
                f"terminated | truncated), got {_describe(done)}",
            )
        )
    values = (done, example["terminated"], example["truncated"])
    if any(isinstance(v, jax.ShapeDtypeStruct | jax.core.Tracer) for v in values):
        return
    derived = bool(np.asarray(example["terminated"])) | bool(np.asarray(example["truncated"]))
    if bool(np.asarray(done)) != derived:
        raise ConfigError(
            message(
                where,
                f"field 'done' of the example is {bool(np.asarray(done))} but 'done' is derived "
                f"as terminated | truncated = {derived}; drop it or make it agree",
            )
        )


def storage_dtype(key: str, value: Any) -> np.dtype:
    """The dtype a field is stored with: flags are bool, integer rewards become float."""
    if hasattr(value, "dtype"):  # arrays and jax.ShapeDtypeStruct
        dtype = jax.dtypes.canonicalize_dtype(value.dtype)
    else:
        dtype = jnp.asarray(value).dtype
    if key in FLAG_KEYS:
        return jnp.dtype(bool)
    if key == "rew" and not jnp.issubdtype(dtype, jnp.inexact):
        return jnp.dtype(jnp.result_type(float))
    return dtype


def _describe(x: Any) -> str:
    return f"shape {tuple(np.shape(x))} dtype {jnp.result_type(x)}"


def check_leaf(name: str, value: Any, shape: tuple, dtype: np.dtype) -> None:
    """Raise if ``value`` cannot be written into a field of ``shape``/``dtype`` without loss.

    Casting follows NumPy's ``same_kind`` rule (float64 into float32 is accepted, float into
    int or int into bool is not), so values never silently change kind (Tianshou's E9).
    """
    actual_shape = tuple(np.shape(value))
    if actual_shape != tuple(shape):
        raise ValueError(
            f"jaxbuf: field '{name}' expected shape {tuple(shape)} dtype {dtype}, "
            f"got {_describe(value)}"
        )
    src = jnp.result_type(value)
    weak = isinstance(value, (bool, int, float)) or getattr(value, "weak_type", False)
    if dtype == jnp.dtype(bool) and src != jnp.dtype(bool):
        ok = False
    elif weak:
        ok = not (jnp.issubdtype(src, jnp.inexact) and not jnp.issubdtype(dtype, jnp.inexact))
    else:
        ok = np.can_cast(np.dtype(src), np.dtype(dtype), casting="same_kind")
    if not ok:
        raise TypeError(
            f"jaxbuf: field '{name}' expected dtype {dtype} (shape {tuple(shape)}), got dtype "
            f"{src}; refusing a cast that would change the value's kind"
        )


def flatten_checked(batch: Any, expected: dict, leading: tuple) -> dict:
    """Check ``batch`` against ``expected`` and return its leaves keyed like ``expected``.

    Args:
      batch: the user's dict of arrays.
      expected: ``{key: pytree of jax.ShapeDtypeStruct}`` without any leading axis.
      leading: the leading shape every leaf must carry (``()`` or ``(k,)``).
    Returns:
      ``{key: pytree of arrays}`` with the same structure as ``expected``.
    """
    given = set(batch)
    want = set(expected)
    if given != want:
        missing, extra = sorted(want - given), sorted(given - want)
        parts = []
        if missing:
            parts.append(f"missing {missing}")
        if extra:
            parts.append(f"unexpected {extra}")
        raise ValueError(
            f"jaxbuf: the batch's keys do not match the example's ({', '.join(parts)}); "
            f"expected exactly {sorted(want)}"
        )
    out = {}
    for key in expected:
        exp_tree = expected[key]
        value = batch[key]
        exp_struct = jax.tree_util.tree_structure(exp_tree)
        try:
            leaves = exp_struct.flatten_up_to(value)
        except (ValueError, TypeError) as err:
            raise ValueError(
                f"jaxbuf: field '{key}' expected structure {exp_struct}, got "
                f"{jax.tree_util.tree_structure(value)}"
            ) from err
        paths = [p for p, _ in jax.tree_util.tree_flatten_with_path(exp_tree)[0]]
        specs = jax.tree_util.tree_leaves(exp_tree)
        for path, leaf, spec in zip(paths, leaves, specs):
            name = key + ("." + key_path_str(path) if path else "")
            check_leaf(name, leaf, leading + tuple(spec.shape), spec.dtype)
        out[key] = exp_struct.unflatten(
            [as_dtype(leaf, spec.dtype) for leaf, spec in zip(leaves, specs)]
        )
    return out


def as_dtype(value: Any, dtype: Any) -> Any:
    """``value`` as an array of ``dtype`` (``None``: its own): JAX arrays and tracers through
    ``jnp``, host values (NumPy arrays, Python scalars, lists) as NumPy arrays, which a jitted
    call transfers itself (an eager ``jnp.asarray`` per leaf was most of an eager ``add``'s
    Python time)."""
    if isinstance(value, jax.Array):
        return jnp.asarray(value, dtype)
    return np.asarray(value, dtype)


def check_same_layout(new: Any, current: Any) -> None:
    """Raise ``ValueError`` naming the field unless ``new`` matches ``current``'s layout."""
    new_flat = {key_path_str(p): x for p, x in jax.tree_util.tree_flatten_with_path(new)[0]}
    cur_flat = {key_path_str(p): x for p, x in jax.tree_util.tree_flatten_with_path(current)[0]}
    if sorted(new_flat) != sorted(cur_flat):
        raise ValueError(
            f"jaxbuf: storage fields {sorted(new_flat)} do not match the buffer's "
            f"{sorted(cur_flat)}"
        )
    for name, want in cur_flat.items():
        got = new_flat[name]
        if jnp.shape(got) != want.shape or jnp.result_type(got) != want.dtype:
            raise ValueError(
                f"jaxbuf: storage field '{name}' expected shape {want.shape} dtype {want.dtype}, "
                f"got shape {jnp.shape(got)} dtype {jnp.result_type(got)}"
            )
