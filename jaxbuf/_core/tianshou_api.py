"""Tianshou's buffer-level API on every buffer class: ``update``, ``reset``,
``get_buffer_indices``, ``repr``, and a refusal to iterate.

:class:`TianshouAPI` is a mixin of :class:`~jaxbuf._core.base.Buffer`; it uses only the
read API and the two halves of an add (``check_batch``/``add_rows``), plus the per-class
``_reset``, so prioritized, HER and cached buffers get the same behaviour.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxbuf._core import layout as links
from jaxbuf._core.checks import is_traced
from jaxbuf._core.validate import bool_option, int_option, key_path_str
from jaxbuf.errors import IndexRangeError, InputError, NotIterableError, message


def _leaf_text(spec: Any) -> str:
    shape = ",".join(str(d) for d in spec.shape)
    return f"{jnp.dtype(spec.dtype).name}[{shape}]"


def _spec_text(spec: dict) -> str:
    parts = []
    for key, tree in spec.items():
        flat = jax.tree_util.tree_flatten_with_path(tree)[0]
        if len(flat) == 1 and not flat[0][0]:
            parts.append(f"{key}: {_leaf_text(flat[0][1])}")
        else:
            inner = ", ".join(f"{key_path_str(p)}: {_leaf_text(v)}" for p, v in flat)
            parts.append(f"{key}: {{{inner}}}")
    return "{" + ", ".join(parts) + "}"


class TianshouAPI:
    """Tianshou's ``update``/``reset``/``get_buffer_indices``/``repr`` (see module docstring)."""

    # ------------------------------------------------------------------ repr and iteration
    def __repr__(self) -> str:
        """``Class(maxsize=..., len=..., fields={name: dtype[shape], ...})``.

        Never transfers the stored data; a traced buffer prints ``len=?``, a stack of
        buffers (``jax.vmap`` over ``create``) its stack shape and each member's length.
        """
        name = type(self).__name__
        lead = self._stack_shape
        member = self
        if lead:
            member = jax.eval_shape(
                lambda b: jax.tree_util.tree_map(lambda x: x[(0,) * len(lead)], b), self
            )
        spec = _spec_text(member.input_spec())
        if is_traced(self):
            size = "?"
        elif lead:
            sizes = self
            fn = lambda b: b.size  # noqa: E731
            for _ in lead:
                fn = jax.vmap(fn)
            size = str(np.asarray(fn(sizes)).tolist())
        else:
            size = str(int(np.sum(np.asarray(self.lengths))))
        stack = f", stack={lead}" if lead else ""
        return f"{name}(maxsize={member.maxsize}, len={size}{stack}, fields={spec})"

    def __iter__(self):
        """Refused: a buffer has ``len`` and ``[]`` but its indices wrap modulo ``maxsize``,
        so Python's fallback iteration would never end. The error comes with the first item
        (``for``, ``list``, ``next``), which lets NumPy treat the buffer as one object."""
        yield from ()
        raise NotIterableError(
            message(
                "iter",
                f"a {type(self).__name__} is not iterable (its indices wrap modulo maxsize); "
                "read the stored transitions with buf[:] (oldest first, one dict of arrays), "
                "buf[buf.chronological_indices()], or buf.split(None, size, shuffle=False)",
            )
        )

    # ------------------------------------------------------------------ reset
    def reset(self, keep_statistics: bool = False) -> Any:
        """This buffer with nothing stored (Tianshou's ``reset``), jittable.

        The storage arrays keep their (now unreachable) contents; every sub-buffer is empty
        and writes again from its first slot. ``keep_statistics`` keeps the return and length
        of each unfinished episode, so its next steps are counted on top of them. Priorities
        of a prioritized buffer are cleared; cached buffers reset main and every cache.
        """
        return self._reset(bool_option("reset", "keep_statistics", keep_statistics))

    # ------------------------------------------------------------------ update
    def update(self, other: Any, buffer_id: int = 0) -> tuple[Any, Any]:
        """Append ``other``'s stored transitions, oldest first (Tianshou's ``update``).

        Every stored transition of ``other`` (each sub-buffer oldest to newest, sub-buffers
        in order: :meth:`all_indices`'s order) is added to sub-buffer ``buffer_id`` of this
        buffer, as ``add`` with ``buffer_ids`` would, so episode links, episode statistics,
        priorities (new slots get the maximum) and cache moves follow the usual rules.
        ``other`` must store the same fields with the same shapes and dtypes (its
        ``obs_next`` may be derived with ``ignore_obs_next``); stacking options may differ.

        Jittable: the add has a static ``other.maxsize`` rows, of which those past
        ``len(other)`` are dropped. Returns ``(buffer, result)`` with the add result of those
        rows (dropped rows report index -1).
        """
        where = "update"
        for buf in (self, other):
            if not isinstance(buf, TianshouAPI):
                raise InputError(
                    message(where, f"expects a jaxbuf buffer, got {type(buf).__name__}")
                )
            buf._require_unstacked(where)
        buffer_id = int_option(where, "buffer_id", buffer_id, minimum=0)
        idx, mask = links.chronological(other.layout, other.insertion_idx, other.lengths)
        spec = self.input_spec()
        rows = other.read(jnp.maximum(idx, 0))
        if "obs_next" in spec and "obs_next" not in rows:
            rows["obs_next"] = other.get(jnp.maximum(idx, 0), "obs_next", stack_num=1)
        if "obs_next" not in spec:
            rows.pop("obs_next", None)
        if set(rows) != set(spec):
            raise InputError(
                message(
                    where,
                    f"other stores fields {sorted(rows)}, this buffer {sorted(spec)}; "
                    "update needs the same fields",
                )
            )
        rows = {key: jax.tree_util.tree_map(_as_input, spec[key], rows[key]) for key in spec}
        ids = jnp.full(idx.shape, buffer_id, jnp.int32)
        checked, _ = self.check_batch(rows, ids if is_traced(rows) else np.asarray(ids))
        dropped = jnp.iinfo(jnp.int32).max  # an id past every sub-buffer: the row is dropped
        return self.add_rows(checked, jnp.where(mask, ids, dropped))

    # ------------------------------------------------------------------ index ranges
    def get_buffer_indices(self, start: int, stop: int) -> np.ndarray:
        """Global slots from ``start`` up to ``stop`` (exclusive) inside one sub-buffer.

        Tianshou's circular range (eager): with ``stop > start`` it is ``arange(start,
        stop)``; with ``stop <= start`` the range wraps at the end of the sub-buffer that
        holds ``start`` and continues from its first slot, e.g. with sub-buffers
        ``[0, 5)`` and ``[5, 10)``: ``(4, 2) -> [4, 0, 1]``, ``(8, 7) -> [8, 9, 5, 6]``.
        ``start`` and ``stop - 1`` must lie in the same sub-buffer, else ``ValueError``.
        The usual use is one episode: ``get_buffer_indices(first, last + 1)``.
        """
        where = "get_buffer_indices"
        start = int_option(where, "start", start)
        stop = int_option(where, "stop", stop)
        edges = np.asarray(self.subbuffer_edges)
        if not 0 <= start < self.maxsize or not 0 < stop <= self.maxsize:
            raise IndexRangeError(
                message(
                    where,
                    f"need 0 <= start < {self.maxsize} and 0 < stop <= {self.maxsize}, got "
                    f"start={start}, stop={stop}",
                )
            )
        part = int(np.searchsorted(edges, start, side="right")) - 1
        stop_part = int(np.searchsorted(edges, stop - 1, side="right")) - 1
        if part != stop_part:
            raise InputError(
                message(
                    where,
                    f"start={start} and stop={stop} must lie in one sub-buffer (edges "
                    f"{edges.tolist()}); start is in sub-buffer {part}, stop - 1 in {stop_part}",
                )
            )
        if start == stop:
            raise InputError(
                message(where, f"start == stop ({start}) is not a range; pass stop != start")
            )
        if stop > start:
            return np.arange(start, stop, dtype=np.int64)
        return np.concatenate(
            [np.arange(start, edges[part + 1]), np.arange(edges[part], stop)]
        ).astype(np.int64)


def _as_input(spec: Any, stored: jax.Array) -> jax.Array:
    """A stored leaf (rows of ``[k, *shape]``) in ``add``'s form: a frame stack whose last
    frame is the stored one where the buffer keeps only the last frame."""
    extra = len(spec.shape) - (stored.ndim - 1)
    if extra <= 0:
        return stored
    return jnp.broadcast_to(stored[:, None], (stored.shape[0], *spec.shape))
