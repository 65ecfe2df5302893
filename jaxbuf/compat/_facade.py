"""``Facade``: a mutable, Tianshou-shaped object around one pure jaxbuf buffer.

The facade holds a pure state (``.state``) and replaces it on every update. Each update is a
``jax.jit`` function with the state donated (``donate_argnums=0``), compiled once per method,
static arguments and shapes, so the new state reuses the old one's memory and an eager
``add`` costs O(rows), not O(capacity). Reads run the pure methods and return NumPy.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxbuf.compat import _batch, _kinds
from jaxbuf.errors import (
    FieldAttributeError,
    FieldError,
    IndexRangeError,
    InputError,
    JaxbufError,
    message,
)


@functools.cache
def donated(method: str) -> Callable:
    """``jax.jit(lambda state, *args: state.<method>(*args), donate_argnums=0)``, cached."""

    def run(state, *args):
        return getattr(state, method)(*args)

    return jax.jit(run, donate_argnums=0)


@functools.cache
def _field_reader(name: str) -> Callable:
    return jax.jit(lambda state: state.global_storage()[name])


@functools.cache
def _sampler(batch_size: int) -> Callable:
    def run(state, key):
        key, sub = jax.random.split(key)
        batch, indices = state.sample(sub, batch_size)
        return key, batch, indices

    return jax.jit(run)


def _bucket(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def rowwise(fn: Callable, index: np.ndarray) -> Any:
    """``fn(index)`` for an int array of any shape, compiled for few shapes.

    The flattened index is padded to a power of two by repeating its first entry (a row-wise
    read is unchanged by that, a ``weight_norm`` maximum too) and the result cut back.
    """
    if index.ndim == 0:
        return jax.tree_util.tree_map(np.asarray, fn(index.astype(np.int32)))
    flat = index.reshape(-1).astype(np.int32)
    n = flat.size
    fill = flat[0] if n else 0
    padded = np.concatenate([flat, np.full(_bucket(n) - n, fill, np.int32)])
    out = fn(padded)
    return jax.tree_util.tree_map(
        lambda x: np.asarray(x)[:n].reshape(index.shape + x.shape[1:]), out
    )


class Facade:
    """Base of every facade class (see :mod:`jaxbuf.compat.tianshou`)."""

    _kind: str
    _options: dict
    _state: Any
    _key: jax.Array

    # ------------------------------------------------------------------ construction
    def _setup(self, kind: str, options: dict, extra: dict) -> None:
        seed = extra.pop("seed", extra.pop("random_seed", 0))
        if extra:
            raise InputError(
                message(
                    type(self).__name__,
                    f"unexpected keyword argument(s) {sorted(extra)}; the facade accepts "
                    "seed (or random_seed) besides Tianshou's options",
                )
            )
        self._kind, self._options, self._state = kind, dict(options), None
        self._key = jax.random.key(int(seed))

    @classmethod
    def from_state(cls, state: Any, *, seed: int = 0) -> Facade:
        """Wrap a pure jaxbuf buffer (any kind) in the facade class that matches it.

        The facade takes ownership: its next update donates ``state``, which is then
        deleted. Pass ``jax.tree.map(jnp.copy, state)`` to keep using your own copy.
        """
        kind, options = _kinds.recipe_of(state)
        target = cls._class_for(kind, options)
        if not issubclass(target, cls):
            raise InputError(
                message(
                    f"{cls.__name__}.from_state",
                    f"the state is a {type(state).__name__} with this layout, which wraps "
                    f"as {target.__name__}; call {target.__name__}.from_state or "
                    "ReplayBuffer.from_state",
                )
            )
        self = object.__new__(target)
        self._setup(kind, options, {"seed": seed})
        self._state = state
        return self

    @staticmethod
    def _class_for(kind: str, options: dict) -> type:  # abstract: see compat.tianshou
        raise NotImplementedError

    @property
    def state(self) -> Any:
        """The pure jaxbuf buffer (None before the first ``add``), for ``jit`` and ``scan``.

        The next facade update donates it: read it, or copy it, before calling ``add``.
        Assign a pure buffer of the same kind to replace the facade's state.
        """
        return self._state

    @state.setter
    def state(self, value: Any) -> None:
        kind, options = _kinds.recipe_of(value)
        if kind != self._kind:
            raise InputError(
                message("state", f"expected a {self._kind} buffer, got {type(value).__name__}")
            )
        self._options, self._state = options, value

    def _ready(self, where: str) -> Any:
        if self._state is None:
            raise InputError(message(f"{type(self).__name__}.{where}", "nothing added yet"))
        return self._state

    # ------------------------------------------------------------------ sizes
    @property
    def maxsize(self) -> int:
        """Total number of slots."""
        if self._state is not None:
            return self._state.maxsize
        o = self._options
        if self._kind == "cached":
            return o["main_size"] + o["cached_buffer_num"] * o["max_episode_length"]
        n = o.get("buffer_num", 1)
        return -(-o["size"] // n) * n

    @property
    def stack_num(self) -> int:
        """Frames per stacked read of ``obs``/``obs_next``/``info``/``policy``."""
        return self._options.get("stack_num", 1)

    @property
    def buffer_num(self) -> int:
        """Number of sub-buffers (caches for a cached buffer)."""
        return self._options.get("buffer_num", self._options.get("cached_buffer_num", 1))

    def __len__(self) -> int:
        return 0 if self._state is None else len(self._state)

    @property
    def last_index(self) -> np.ndarray:
        """Global slot of each sub-buffer's latest write."""
        return np.asarray(self._ready("last_index").last_index).astype(np.int64)

    @property
    def subbuffer_edges(self) -> np.ndarray:
        """First slot of each sub-buffer, then ``maxsize``."""
        return np.asarray(self._ready("subbuffer_edges").subbuffer_edges)

    def __repr__(self) -> str:
        head = f"{type(self).__name__}(maxsize={self.maxsize}, len={len(self)}"
        if self._state is None:
            return head + ", empty)"
        spec = self._state.input_spec()
        if self.maxsize > 64:
            fields = ", ".join(f"{k}={_shape_str(v)}" for k, v in spec.items())
            return f"{head}, {fields})"
        lines = [f"    {k}: {self._field(k)!r}".replace("\n", "\n    ") for k in spec]
        return head + ",\n" + ",\n".join(lines) + ",\n)"

    # ------------------------------------------------------------------ add
    def _single_form(self, buffer_ids: Any) -> bool:
        return self._kind != "cached" and self.buffer_num == 1 and buffer_ids is None

    def _allocate(self, batch: dict, buffer_ids: Any) -> None:
        where = f"{type(self).__name__}.add"
        example = (
            _batch.single(batch)
            if self._single_form(buffer_ids)
            else _batch.first_row(batch, where)
        )
        example.pop("done", None)
        self._state = _kinds.create(self._kind, example, self._options)

    def add(self, batch: Any, buffer_ids: Any = None) -> tuple[np.ndarray, ...]:
        """Store transitions; return ``(ptr, ep_rew, ep_len, ep_idx)`` as NumPy arrays.

        ``batch``: one transition without a batch axis (plain buffer, ``buffer_ids=None``),
        or rows with a leading axis routed by ``buffer_ids`` (default: one row per
        sub-buffer / cache). The first ``add`` allocates the storage from the batch's shapes
        and dtypes. Each array has one entry per row; ``ep_rew``/``ep_len`` are 0 unless the
        row ends its episode.
        """
        where = f"{type(self).__name__}.add"
        batch = _batch.as_batch(batch, where)
        if self._state is None:
            self._allocate(batch, buffer_ids)
        ids = None if buffer_ids is None else self._check_ids(buffer_ids, where)
        rows, ids = self._state.check_batch(batch, ids)
        self._state, result = donated("add_rows")(self._state, rows, ids)
        ptr, ep_rew, ep_len, ep_idx = (np.asarray(x) for x in tuple(result)[:4])
        return ptr.astype(np.int64), ep_rew, ep_len.astype(np.int64), ep_idx.astype(np.int64)

    def _check_ids(self, buffer_ids: Any, where: str) -> np.ndarray:
        ids = np.asarray(buffer_ids)
        if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
            raise InputError(
                message(
                    where,
                    f"buffer_ids must be a 1-d int array, got shape {ids.shape} dtype {ids.dtype}",
                )
            )
        n = _kinds.route_count(self._state)
        bad = ids[(ids < 0) | (ids >= n)]
        if bad.size:
            raise IndexRangeError(
                message(where, f"buffer_ids must lie in [0, {n}), got {bad[:8].tolist()}")
            )
        return ids.astype(np.int32)

    # ------------------------------------------------------------------ reads
    def _index(self, index: Any, where: str) -> np.ndarray:
        state = self._ready(where)
        if isinstance(index, slice):
            if index == slice(None):
                return state.chronological_indices()
            stored = np.flatnonzero(np.asarray(state.valid_mask()))
            return stored[index]
        idx = np.asarray(index)
        if idx.dtype == np.bool_:
            if idx.shape != (self.maxsize,):
                raise InputError(
                    message(where, f"a bool index needs shape ({self.maxsize},), got {idx.shape}")
                )
            return np.flatnonzero(idx)
        if not np.issubdtype(idx.dtype, np.integer):
            raise InputError(message(where, f"indices must be integers, got dtype {idx.dtype}"))
        m = self.maxsize
        bad = idx[(idx < -m) | (idx >= m)]
        if bad.size:
            raise IndexRangeError(
                message(where, f"indices must lie in [-{m}, {m}), got {bad[:8].tolist()}")
            )
        return np.mod(idx, m)

    def __getitem__(self, index: Any) -> _batch.BatchDict:
        """Transitions at ``index`` (int, int array, bool mask or slice) as a BatchDict.

        ``buf[:]`` is every stored transition in chronological order; another slice applies
        to the stored slots in slot order (Tianshou's ``arange(len(buf))`` for a plain
        buffer). Negative ints count from ``maxsize``, as NumPy.
        """
        idx = self._index(index, "__getitem__")
        return _batch.to_numpy(rowwise(self._state.__getitem__, idx))

    def get(self, index: Any, key: str, default_value: Any = None, stack_num: int | None = None):
        """Field ``key`` at ``index``, stacked over ``stack_num`` frames (default: the buffer's).

        Returns ``default_value`` if the buffer stores no ``key`` and a default is given.
        """
        state = self._ready("get")
        if key not in state.fields():
            if default_value is not None:
                return default_value
            raise FieldError(
                message("get", f"no field '{key}'; fields are {sorted(state.fields())}")
            )
        idx = self._index(index, "get")
        read = functools.partial(state.get, key=key, stack_num=stack_num)
        return _batch.to_numpy(rowwise(read, idx))

    def prev(self, index: Any) -> np.ndarray:
        """Previous slot of the same episode (the index itself at an episode start)."""
        return rowwise(self._ready("prev").prev, self._index(index, "prev")).astype(np.int64)

    def next(self, index: Any) -> np.ndarray:
        """Next slot of the same episode (the index itself at an episode end)."""
        return rowwise(self._ready("next").next, self._index(index, "next")).astype(np.int64)

    def unfinished_index(self) -> np.ndarray:
        """The latest slot of every unfinished episode (Tianshou's variable-length form)."""
        if self._state is None:
            return np.array([], np.int64)
        return self._state.unfinished_index_compact()

    def _field(self, name: str) -> Any:
        state = self._state
        if name == "done":
            flags = self._field("terminated"), self._field("truncated")
            return flags[0] | flags[1]
        return _batch.to_numpy(_field_reader(name)(state))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise FieldAttributeError(name)
        state = self.__dict__.get("_state")
        if state is None:
            raise FieldAttributeError(
                f"{type(self).__name__} has no attribute '{name}' (no field is stored before "
                "the first add)"
            )
        if name in state.fields() or name == "done":
            return self._field(name)
        raise FieldAttributeError(
            f"{type(self).__name__} has no attribute or field '{name}'; fields are "
            f"{sorted(state.fields())}"
        )

    # ------------------------------------------------------------------ sampling
    def _next_key(self) -> jax.Array:
        self._key, sub = jax.random.split(self._key)
        return sub

    def sample_indices(self, batch_size: int | None) -> np.ndarray:
        """Tianshou's ``sample_indices``: ``> 0`` random draws with replacement (by
        priority for prioritized buffers), ``0`` every transition in chronological order,
        ``None`` ``len(buf)`` draws for a plain buffer and all for a vector one, ``< 0``
        nothing."""
        state = self._ready("sample_indices")
        if batch_size is None:
            plain = self._kind != "cached" and self.buffer_num == 1
            batch_size = len(self) if plain else 0
        if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
            raise InputError(message("sample", f"batch_size must be an int, got {batch_size!r}"))
        if batch_size < 0:
            return np.array([], np.int64)
        if batch_size == 0:
            return state.chronological_indices()
        if len(self) == 0:
            raise InputError(message("sample", "cannot sample from an empty buffer"))
        return np.asarray(state.sample_indices(self._next_key(), int(batch_size))).astype(np.int64)

    def sample(self, batch_size: int | None) -> tuple[_batch.BatchDict, np.ndarray]:
        """``(batch, indices)``: see :meth:`sample_indices`; the key is internal (``seed``)."""
        state = self._ready("sample")
        if isinstance(batch_size, int | np.integer) and not isinstance(batch_size, bool):
            if batch_size > 0 and len(self) > 0:
                self._key, batch, idx = _sampler(int(batch_size))(state, self._key)
                return _batch.to_numpy(batch), np.asarray(idx).astype(np.int64)
        idx = self.sample_indices(batch_size)
        return self._read_sampled(idx), idx

    def _read_sampled(self, idx: np.ndarray) -> _batch.BatchDict:
        return _batch.to_numpy(rowwise(self._state.__getitem__, idx))

    def split(self, size: int, shuffle: bool = True, merge_last: bool = False):
        """Minibatches ``(batch, indices)`` over every stored transition (Tianshou's
        ``split``); ``size=-1`` is everything at once."""
        state = self._ready("split")
        key = self._next_key() if shuffle else None
        for batch, idx in state.split(key, size, shuffle, merge_last):
            yield _batch.to_numpy(batch), idx.astype(np.int64)

    # ------------------------------------------------------------------ whole-buffer updates
    def reset(self, keep_statistics: bool = False) -> None:
        """Empty the buffer (same layout); ``keep_statistics`` keeps the unfinished
        episodes' return, length and start, as Tianshou (the stored data is cleared)."""
        old = self._state
        if old is None:
            return
        spec = old.input_spec()
        kept = {
            path: jax.device_get(core.episode_counters())
            for path, core in _kinds.cores(old).items()
        }
        carry = self._carry_over(old)
        self._state = old = None
        new = _kinds.create(self._kind, spec, self._options)
        if keep_statistics:
            fresh = {}
            for path, core in _kinds.cores(new).items():
                c = core.episode_counters()
                k = kept[path]
                fresh[path] = core.with_counters(
                    c._replace(
                        ep_return=jnp.asarray(k.ep_return),
                        ep_len=jnp.asarray(k.ep_len),
                        ep_start=jnp.asarray(k.ep_start),
                    )
                )
            new = _kinds.with_cores(new, fresh)
        self._state = new.replace(**carry) if carry else new

    def _carry_over(self, state: Any) -> dict:
        """State leaves that survive ``reset`` (the prioritized ``beta`` and ``max_prio``)."""
        return {}

    def update(self, other: Any) -> np.ndarray:
        """Append ``other``'s stored transitions (a facade or a pure buffer) in
        chronological order; return the slots written. Plain (one sub-buffer) targets only.

        Unlike Tianshou the rows go through ``add``, so the episode counters follow them.
        """
        where = f"{type(self).__name__}.update"
        if self._kind == "cached" or self.buffer_num != 1:
            raise JaxbufError(
                message(where, "only a buffer with one sub-buffer can be updated from another")
            )
        src = other.state if isinstance(other, Facade) else other
        if src is None or len(src) == 0:
            return np.array([], np.int64)
        idx = src.chronological_indices()
        rows = self._rows_from(src, idx, where)
        out = []
        for start in range(0, len(idx), self.maxsize):
            chunk = jax.tree_util.tree_map(lambda x, s=start: x[s : s + self.maxsize], rows)
            n = len(chunk["act"])
            out.append(self.add(chunk, buffer_ids=np.zeros(n, np.int64))[0])
        return np.concatenate(out)

    def _rows_from(self, src: Any, idx: np.ndarray, where: str) -> dict:
        """``src``'s stored rows at ``idx`` in the form this buffer's ``add`` takes."""
        rows = jax.device_get(rowwise(src.read, idx))
        want = None if self._state is None else self._state.input_spec()
        if "obs_next" not in rows and want is not None and "obs_next" in want:
            after = rowwise(src.next, idx)
            rows["obs_next"] = jax.device_get(
                rowwise(functools.partial(src.get, key="obs", stack_num=1), after)
            )
        if self._options.get("save_only_last_obs", False):
            frames = self._state.obs_stack_len if self._state is not None else self.stack_num
            for key in ("obs", "obs_next"):
                if key in rows:
                    rows[key] = jax.tree_util.tree_map(
                        lambda x: np.repeat(x[:, None], frames, axis=1), rows[key]
                    )
        if want is not None:
            extra = sorted(set(rows) - set(want) - {"obs_next"})
            if extra:
                raise FieldError(
                    message(
                        where, f"the other buffer stores field(s) {extra} that this one does not"
                    )
                )
        return rows


def _shape_str(spec: Any) -> str:
    if isinstance(spec, dict):
        return "{" + ", ".join(f"{k}: {_shape_str(v)}" for k, v in spec.items()) + "}"
    return f"{spec.dtype}{list(spec.shape)}"
