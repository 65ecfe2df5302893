"""Trace-time checks of buffer configuration and of added batches against the example.

Every error names the offending field, what was expected and what was given, so a
mistake is reported when the function is traced, never as silent corruption later.

Values that change on the way into storage: with concrete inputs (eager calls) a cast that
would change a value raises, naming the field (an integer outside the field's range, a
finite float that would overflow to inf). Under ``jit`` the values are not known when the
check runs, so only the dtype rule applies: an argument entering ``jit`` is converted by JAX
first (with 64-bit types disabled an int64 array becomes int32, wrapping values outside
its range, and a float64 array becomes float32), and the field's cast is XLA's. Check such
data on the host before it enters a jitted function.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxbuf._core.checks import is_traced
from jaxbuf.errors import ConfigError, IndexRangeError, InputError, message

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
        raise ConfigError(
            f"jaxbuf: the example transition must be a dict, got {type(example).__name__}"
        )
    example = {key: host_leaves(value) for key, value in example.items()}
    missing = [k for k in REQUIRED_KEYS if k not in example]
    if missing:
        raise ConfigError(f"jaxbuf: the example transition lacks the reserved key(s) {missing}")
    for key in FLAG_KEYS:
        if np.shape(example[key]) != ():
            raise ConfigError(
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


def host_leaves(tree: Any) -> Any:
    """``tree`` with every list or tuple of numbers replaced by a NumPy array.

    Python lists and scalars are accepted wherever arrays are (as in Tianshou); a list whose
    items are not all numbers (e.g. a list of dicts) stays a pytree node.
    """
    if isinstance(tree, Mapping):
        return {k: host_leaves(v) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        try:
            array = np.asarray(tree)
        except ValueError:  # ragged
            array = None
        if array is not None and array.dtype.kind in "biufc":
            return array
        return type(tree)(host_leaves(v) for v in tree)
    return tree


def _kind(dtype: Any) -> str:
    """NumPy's kind letter, with JAX's extra float types (bfloat16, float8) as ``f``."""
    dtype = np.dtype(dtype)
    if dtype.kind in "biufc":
        return dtype.kind
    return "f" if jnp.issubdtype(dtype, jnp.floating) else dtype.kind


def _dtype_of(x: Any) -> np.dtype | None:
    """The dtype ``x`` has as given (NumPy's for host values, so int64 stays int64), or
    None for something that is not a number or an array of numbers."""
    if isinstance(x, bool | int | float | complex | np.generic | np.ndarray | jax.Array):
        dtype = np.dtype(x.dtype) if hasattr(x, "dtype") else np.asarray(x).dtype
        return dtype if _kind(dtype) in "biufc" else None
    if hasattr(x, "dtype") and hasattr(x, "shape"):  # ShapeDtypeStruct, tracers
        return np.dtype(x.dtype)
    return None


def _describe(x: Any) -> str:
    dtype = _dtype_of(x)
    if dtype is None:
        text = repr(x)
        text = text if len(text) <= 40 else text[:37] + "..."
        return f"a {type(x).__name__} {text}"
    return f"shape {tuple(np.shape(x))} dtype {dtype}"


def _is_weak(value: Any) -> bool:
    """Python scalars (and JAX weakly typed values) take the field's dtype if the kind fits."""
    return isinstance(value, bool | int | float) or bool(getattr(value, "weak_type", False))


def check_leaf(name: str, value: Any, shape: tuple, dtype: np.dtype) -> None:
    """Raise if ``value`` cannot be written into a field of ``shape``/``dtype`` without loss.

    Casting follows NumPy's ``same_kind`` rule (float64 into float32 is accepted, float into
    int or int into bool is not), so values never silently change kind; Python scalars and
    lists take the field's dtype when their kind fits, and concrete integer arrays go into
    any integer field whose range holds their values. With concrete values a cast that
    would change a value (an integer outside the field's range, a finite float that
    overflows to inf) raises as well; see :func:`check_values`.
    """
    src = _dtype_of(value)
    if src is None:
        raise InputError(
            f"jaxbuf: field '{name}' expected an array of shape {tuple(shape)} dtype {dtype}, "
            f"got {_describe(value)}"
        )
    actual_shape = tuple(np.shape(value))
    if actual_shape != tuple(shape):
        raise InputError(
            f"jaxbuf: field '{name}' expected shape {tuple(shape)} dtype {dtype}, "
            f"got {_describe(value)}"
        )
    if dtype == jnp.dtype(bool) and src != np.dtype(bool):
        ok = False
    elif _is_weak(value):
        ok = not (_kind(src) in "fc" and _kind(dtype) not in "fc")
    elif src.kind in "iu" and np.dtype(dtype).kind in "iu" and not is_traced(value):
        ok = True  # concrete integers of any width or sign: check_values checks the range
    else:
        ok = np.can_cast(src, np.dtype(dtype), casting="same_kind")
    if not ok:
        raise InputError(
            f"jaxbuf: field '{name}' expected dtype {dtype} (shape {tuple(shape)}), got dtype "
            f"{src}; refusing a cast that would change the value's kind"
        )
    check_values(name, value, src, np.dtype(dtype))


def check_values(name: str, value: Any, src: np.dtype, dtype: np.dtype) -> None:
    """Raise if casting concrete ``value`` from ``src`` to ``dtype`` would change a value.

    Integers must lie in the field's range; finite floats must stay finite (rounding to the
    nearest representable float, as float64 into float32 does, is accepted). Traced values
    are not checked: under ``jit`` the conversion is JAX's (see the module docstring).
    """
    if src == dtype or src == np.dtype(bool) or is_traced(value):
        return
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if src.kind in "iu" and np.iinfo(src).min >= info.min and np.iinfo(src).max <= info.max:
            return
        host = np.asarray(value)
        bad = (host < info.min) | (host > info.max)
        what = f"outside the range [{info.min}, {info.max}] of {dtype}"
    elif _kind(dtype) == "f" and _kind(src) in "iuf":
        top = float(jnp.finfo(dtype).max)
        if _kind(src) == "f" and float(jnp.finfo(src).max) <= top:
            return
        if src.kind in "iu" and np.iinfo(src).max <= top:
            return
        host = np.asarray(value).astype(np.float64)
        bad = np.isfinite(host) & (np.abs(host) > top)
        what = f"beyond the largest {dtype} ({top:.4g}), which would become inf"
    else:
        return
    if np.any(bad):
        first = np.asarray(host)[bad].reshape(-1)[0]
        raise InputError(
            f"jaxbuf: field '{name}' holds {first!r} ({src}), {what}; storing it would change "
            f"the value. Convert it yourself (e.g. np.asarray(x, '{dtype}')) if that is meant"
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
        raise InputError(
            f"jaxbuf: the batch's keys do not match the example's ({', '.join(parts)}); "
            f"expected exactly {sorted(want)}"
        )
    out = {}
    for key in expected:
        exp_tree = expected[key]
        value = host_leaves(batch[key])
        exp_struct = jax.tree_util.tree_structure(exp_tree)
        try:
            leaves = exp_struct.flatten_up_to(value)
        except (ValueError, TypeError) as err:
            raise InputError(
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
    """Raise :class:`~jaxbuf.errors.InputError` naming the field unless ``new`` matches
    ``current``'s layout."""
    new_flat = {key_path_str(p): x for p, x in jax.tree_util.tree_flatten_with_path(new)[0]}
    cur_flat = {key_path_str(p): x for p, x in jax.tree_util.tree_flatten_with_path(current)[0]}
    if sorted(new_flat) != sorted(cur_flat):
        raise InputError(
            f"jaxbuf: storage fields {sorted(new_flat)} do not match the buffer's "
            f"{sorted(cur_flat)}"
        )
    for name, want in cur_flat.items():
        got = new_flat[name]
        if jnp.shape(got) != want.shape or jnp.result_type(got) != want.dtype:
            raise InputError(
                f"jaxbuf: storage field '{name}' expected shape {want.shape} dtype {want.dtype}, "
                f"got shape {jnp.shape(got)} dtype {jnp.result_type(got)}"
            )


def size_option(where: str, name: str, value: Any) -> int:
    """A batch size or window length: a Python or NumPy int >= 1, else ``InputError``.

    Sizes are static (they fix array shapes), so a traced value is refused too. For 0 the
    message points to the calls that return every stored transition.
    """
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        kind = "a traced value" if is_traced(value) else f"{type(value).__name__} {value!r}"
        raise InputError(
            message(where, f"{name} must be a Python int >= 1 (it fixes the shape), got {kind}")
        )
    if value < 1:
        hint = (
            "; for every stored transition (Tianshou's sample(0)) use buf.all_indices() "
            "(static shape with a mask, jittable) or buf.chronological_indices() (eager), "
            "and read them with buf[indices]"
            if value == 0
            else ""
        )
        raise InputError(message(where, f"{name} must be >= 1, got {value}{hint}"))
    return int(value)


def check_key(where: str, key: Any) -> None:
    """Raise ``InputError`` unless ``key`` is a JAX PRNG key (typed, or raw ``uint32[2]``)."""
    dtype = getattr(key, "dtype", None)
    if dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key):
        return
    if dtype is not None and np.dtype(dtype) == np.uint32 and np.ndim(key) >= 1:
        return
    got = f"{type(key).__name__} {key!r}" if dtype is None else f"shape {np.shape(key)} {dtype}"
    raise InputError(
        message(
            where,
            "the first argument must be a JAX PRNG key, e.g. jax.random.key(0) (split it for "
            f"each call); got {got}",
        )
    )


def check_range(where: str, name: str, values: Any, upper: int, note: str = "") -> None:
    """Raise :class:`~jaxbuf.errors.IndexRangeError` naming ``name`` when concrete integer
    ``values`` fall outside ``[0, upper)`` (listing at most 8 of them); traced values are
    left to the caller's documented run-time rule."""
    if is_traced(values):
        return
    host = np.asarray(values)
    bad = host[(host < 0) | (host >= upper)]
    if bad.size:
        raise IndexRangeError(
            message(where, f"{name} must lie in [0, {upper}){note}, got {bad[:8].tolist()}")
        )
