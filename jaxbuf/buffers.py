"""``ReplayBuffer``: the pure-state core every other buffer builds on.

A buffer is an immutable pytree (a ``flax.struct.PyTreeNode``): the storage dict, the
per-sub-buffer counters of :mod:`jaxbuf._core.episodes`, and static configuration. Every
method is a pure function that returns new values (``add`` returns a new buffer), so it runs
eagerly, under ``jax.jit``, inside ``lax.scan`` and under ``jax.vmap`` over a stack of buffers.
An eager call runs the method under ``jax.jit`` (compiled once per buffer structure and input
shapes, :mod:`jaxbuf._core.dispatch`); a traced call runs its operations directly. The read
API (``prev``, ``next``, ``get``, ``[]``, sampling, index sets) comes from
:class:`jaxbuf._core.base.Buffer`.

Layout: ``buffer_num`` sub-buffers of ``subbuffer_size`` slots, sub-buffer ``k`` owning the
global slots ``[k*m, (k+1)*m)``, exactly as in Tianshou's ``VectorReplayBuffer``; the default
``buffer_num=1`` is Tianshou's ``ReplayBuffer``. ``VectorReplayBuffer`` is the same class,
created with Tianshou's ``(total_size, buffer_num)`` signature. Every index in the API is a
global slot. Physically the storage is time-major, ``[m, n, ...]`` with global slot ``g`` at
``[g % m, g // m]`` (see :mod:`jaxbuf._core.storage`); :meth:`ReplayBuffer.global_storage`
returns it in global-slot order.

Run-time conditions inside ``jit`` have one documented result each (use
:func:`jaxbuf.checked` to raise instead):

* indices passed to ``prev``/``next``/``get``/``[]`` are taken modulo ``maxsize``;
* sampling an empty buffer returns slot 0 for every draw;
* an ``add`` row whose ``buffer_id`` is outside ``[0, buffer_num)`` is dropped (its result
  row is ``(-1, 0, 0, -1)``);
* a ``done`` field that disagrees with ``terminated | truncated`` is ignored (``done`` is
  always derived); eagerly, with concrete values, it raises at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxbuf._core import episodes, memory, storage, validate
from jaxbuf._core.base import Buffer
from jaxbuf._core.checks import is_traced, runtime_check
from jaxbuf._core.dispatch import compiled_when_eager
from jaxbuf._core.episodes import AddResult
from jaxbuf._core.kinds import VectorKind
from jaxbuf._core.layout import Layout
from jaxbuf.errors import ConfigError, InputError, message

__all__ = ["CORE_OPTIONS", "ReplayBuffer", "VectorReplayBuffer"]

CORE_OPTIONS = (
    "buffer_num",
    "stack_num",
    "ignore_obs_next",
    "save_only_last_obs",
    "sample_avail",
    "lockstep",
    "storage_memory_kind",
)
"""The keyword options of :meth:`ReplayBuffer.create`, which every buffer kind accepts."""


def _column(column: int, doc: str) -> property:
    """A read-only property: one column of the packed ``counters`` (refused on a stack)."""

    def read(self):
        self._require_unstacked(f"this call (it reads the counter '{episodes.PACKED[column]}')")
        return self.counters[:, column]

    return property(read, doc=doc)


def _frame_counts(spec: dict) -> int | tuple[int, int]:
    """The leading frame axis of ``obs`` (and ``obs_next``) for ``save_only_last_obs``."""
    counts = []
    for key in ("obs", "obs_next"):
        if key not in spec:
            continue
        shapes = [s.shape for s in jax.tree_util.tree_leaves(spec[key])]
        if any(len(s) == 0 for s in shapes) or len({s[0] for s in shapes}) != 1:
            raise ConfigError(
                message(
                    "create",
                    f"save_only_last_obs needs '{key}' with a leading frame axis (the same on"
                    f" every leaf), got shape(s) {shapes}",
                )
            )
        counts.append(shapes[0][0])
    return counts[0] if len(set(counts)) == 1 else tuple(counts)


class ReplayBuffer(Buffer):
    """A circular replay buffer with Tianshou's episode semantics, as a pure pytree.

    Attributes:
      storage: dict of time-major arrays ``[subbuffer_size, buffer_num, *field_shape]``
        (global slot ``g`` at ``[g % m, g // m]``); keys of the example (``obs_next``
        absent with ``ignore_obs_next``).
      counters: int32[buffer_num, 5], the packed per-sub-buffer counters
        (``insertion_idx, lengths, last_slot, ep_len, ep_start``, see
        :mod:`jaxbuf._core.episodes`), also readable one by one as properties.
      ep_return: float[buffer_num, *rew_shape], return of each unfinished episode.
      static configuration: ``subbuffer_size``, ``buffer_num``, ``stack_num``,
        ``ignore_obs_next``, ``save_only_last_obs``, ``sample_avail``, ``obs_stack_len``,
        ``lockstep``, ``storage_memory_kind``. ``obs_stack_len`` is the frame count of the
        incoming ``obs`` stacks with ``save_only_last_obs`` (an int), or ``(obs frames,
        obs_next frames)`` when they differ.

    Example:
      A three-step episode added inside ``lax.scan``; the last add reports the episode:

      >>> import jax, jax.numpy as jnp
      >>> from jaxbuf import ReplayBuffer
      >>> ex = dict(obs=jnp.zeros(2), act=jnp.int32(0), rew=jnp.float32(0),
      ...           terminated=False, truncated=False)
      >>> def step(buf, t):
      ...     row = dict(obs=jnp.full(2, t, jnp.float32), act=t, rew=jnp.float32(1),
      ...                terminated=t == 2, truncated=False)
      ...     return buf.add(row)
      >>> buf, res = jax.lax.scan(step, ReplayBuffer.create(ex, 4), jnp.arange(3))
      >>> len(buf), res.episode_length[:, 0].tolist(), res.episode_return[:, 0].tolist()
      (3, [0, 0, 3], [0.0, 0.0, 3.0])
      >>> buf.next(jnp.arange(3)).tolist()  # the episode end points at itself
      [1, 2, 2]
      >>> batch, indices = buf.sample(jax.random.key(0), 2)
      >>> batch["obs"].shape, indices.shape
      ((2, 2), (2,))
    """

    storage: dict
    counters: jax.Array
    ep_return: jax.Array
    subbuffer_size: int = struct.field(pytree_node=False)
    buffer_num: int = struct.field(pytree_node=False, default=1)
    stack_num: int = struct.field(pytree_node=False, default=1)
    ignore_obs_next: bool = struct.field(pytree_node=False, default=False)
    save_only_last_obs: bool = struct.field(pytree_node=False, default=False)
    sample_avail: bool = struct.field(pytree_node=False, default=False)
    obs_stack_len: int | tuple[int, int] = struct.field(pytree_node=False, default=0)
    lockstep: bool = struct.field(pytree_node=False, default=False)
    storage_memory_kind: str | None = struct.field(pytree_node=False, default=None)

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(
        cls,
        example: dict,
        size: int,
        *,
        buffer_num: int = 1,
        stack_num: int = 1,
        ignore_obs_next: bool = False,
        save_only_last_obs: bool = False,
        sample_avail: bool = False,
        lockstep: bool = False,
        storage_memory_kind: str | None = None,
    ) -> ReplayBuffer:
        """An empty buffer of ``size`` slots for transitions shaped like ``example``.

        Args:
          example: one transition without a batch axis: a dict with the reserved keys
            ``obs, act, rew, terminated, truncated`` and optional ``obs_next``, ``info``
            (a nested pytree), ``policy`` and any extra keys. Arrays or
            ``jax.ShapeDtypeStruct``; only shapes and dtypes are used. Flags are stored as
            bool and integer rewards as float.
          size: number of slots (> 0), cut into ``buffer_num`` sub-buffers of
            ``ceil(size / buffer_num)`` slots.
          buffer_num: number of sub-buffers, one per environment (Tianshou's
            ``VectorReplayBuffer``); episodes never cross sub-buffers.
          stack_num: frames per stacked read of ``obs``/``obs_next``/``info``/``policy``.
          ignore_obs_next: do not store ``obs_next``; read it as ``obs[next(i)]``.
          save_only_last_obs: ``obs`` (and ``obs_next``) arrive as frame stacks
            ``[F, ...]``; only the last frame is stored, and stacks are rebuilt on read.
          sample_avail: with ``stack_num > 1``, only sample indices whose stack needs no
            padding.
          lockstep: promise that every ``add`` carries one row per sub-buffer
            (``buffer_ids=None``), as with ``buffer_num`` environments stepped together
            (``vmap``). The sub-buffers then share one insertion slot and an add writes one
            contiguous block (``dynamic_update_slice`` instead of a scatter). ``add`` with
            ``buffer_ids`` raises at trace time; a state whose insertion slots differ
            (possible only through ``with_counters``) is reported by :func:`jaxbuf.checked`.
          storage_memory_kind: where the storage arrays live: ``None`` (or ``"device"``)
            for device memory, ``"pinned_host"`` for the host memory of the device (where
            the backend offers it; CPU and GPU do). Counters stay on the device; ``add``
            moves only its new rows to the host and reads gather on the host and move only
            the gathered rows to the device (docs/memory.md). Other kinds raise
            :class:`~jaxbuf.errors.ConfigError` naming the usable ones.

        Example:
          >>> import jax.numpy as jnp
          >>> from jaxbuf import ReplayBuffer
          >>> ex = dict(obs=jnp.zeros(3), act=jnp.int32(0), rew=jnp.float32(0),
          ...           terminated=False, truncated=False)
          >>> buf = ReplayBuffer.create(ex, 8, buffer_num=2)
          >>> buf.maxsize, buf.subbuffer_edges.tolist()
          (8, [0, 4, 8])
        """
        validate.check_config(size, buffer_num, stack_num, lockstep)
        kind = memory.check_kind(f"{cls.__name__}.create", storage_memory_kind)
        example = validate.check_example(example)
        m = -(-size // buffer_num)
        spec = storage.input_spec(example, ignore_obs_next=ignore_obs_next)
        obs_stack_len = _frame_counts(spec) if save_only_last_obs else 0
        stored = storage.stored_spec(spec, save_only_last_obs=save_only_last_obs)
        rew = stored["rew"]
        counters, ep_return = episodes.pack(
            episodes.init_counters(buffer_num, rew.shape, rew.dtype)
        )
        return cls(
            storage=storage.allocate(stored, m, buffer_num, kind),
            counters=counters,
            ep_return=ep_return,
            subbuffer_size=m,
            buffer_num=buffer_num,
            stack_num=stack_num,
            ignore_obs_next=ignore_obs_next,
            save_only_last_obs=save_only_last_obs,
            sample_avail=sample_avail,
            obs_stack_len=obs_stack_len,
            lockstep=bool(lockstep),
            storage_memory_kind=kind,
        )

    # ------------------------------------------------------------------ layout
    @property
    def layout(self) -> Layout:
        """``buffer_num`` parts of ``subbuffer_size`` slots (static)."""
        return Layout.uniform(self.subbuffer_size, self.buffer_num)

    def input_spec(self) -> dict:
        """Shape/dtype of one transition as ``add`` expects it (no batch axis)."""
        self._require_unstacked("input_spec")
        spec = jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct(x.shape[2:], x.dtype), self.storage
        )
        if self.save_only_last_obs:
            counts = self.obs_stack_len
            frames = dict(
                zip(("obs", "obs_next"), counts if isinstance(counts, tuple) else (counts,) * 2)
            )
            for key in ("obs", "obs_next"):
                if key in spec:
                    spec[key] = jax.tree_util.tree_map(
                        lambda s, f=frames[key]: jax.ShapeDtypeStruct((f, *s.shape), s.dtype),
                        spec[key],
                    )
        return spec

    # ------------------------------------------------------------------ counters
    insertion_idx = _column(
        episodes.INSERTION_IDX, "int32[buffer_num]: local slot of each sub-buffer's next write."
    )
    lengths = _column(episodes.LENGTHS, "int32[buffer_num]: stored transitions per sub-buffer.")
    ep_len = _column(
        episodes.EP_LEN, "int32[buffer_num]: length of each sub-buffer's unfinished episode."
    )
    ep_start = _column(
        episodes.EP_START,
        "int32[buffer_num]: local start slot of each sub-buffer's unfinished episode.",
    )
    _last_slot = _column(episodes.LAST_SLOT, "int32[buffer_num]: local slot of the latest write.")

    @property
    def last_index(self) -> jax.Array:
        """int32[buffer_num]: global slot of each sub-buffer's latest write (``k*m`` if empty)."""
        first = jnp.arange(self.buffer_num, dtype=jnp.int32) * self.subbuffer_size
        return first + self._last_slot

    def episode_counters(self) -> episodes.Counters:
        """The per-sub-buffer counters, unpacked (``last_slot`` local)."""
        return episodes.unpack(self.counters, self.ep_return)

    def with_counters(self, counters: episodes.Counters) -> ReplayBuffer:
        """This buffer with the counters replaced (packed back into the state)."""
        packed, ep_return = episodes.pack(counters)
        return self.replace(counters=packed, ep_return=ep_return.astype(self.ep_return.dtype))

    @property
    def _stack_shape(self) -> tuple[int, ...]:
        """Leading axes of a stack of buffers (``jax.vmap`` over ``create``); ``()`` if none."""
        return tuple(self.counters.shape[:-2])

    def _reset(self, keep_statistics: bool) -> ReplayBuffer:
        """Nothing stored; the unfinished episodes' return and length kept if asked."""
        zeros = jnp.zeros((self.buffer_num,), jnp.int32)
        c = self.episode_counters()
        keep = keep_statistics
        return self.with_counters(
            c._replace(
                insertion_idx=zeros,
                lengths=zeros,
                last_slot=zeros,
                ep_start=zeros,
                ep_len=c.ep_len if keep else zeros,
                ep_return=c.ep_return if keep else jnp.zeros_like(c.ep_return),
            )
        )

    def global_storage(self) -> dict:
        """The storage as ``[maxsize, *field_shape]`` arrays in global-slot order (a copy).

        ``buf.global_storage()[key][g]`` is field ``key`` of global slot ``g`` (Tianshou's
        ``buf._meta``); for inspection and export, jittable. The copy is in the storage's
        memory (host memory with ``storage_memory_kind``).
        """
        return storage.to_global_order(self.storage, self.storage_memory_kind)

    def with_global_storage(self, arrays: dict) -> ReplayBuffer:
        """This buffer with its storage replaced by ``[maxsize, ...]`` arrays in slot order.

        The inverse of :meth:`global_storage` (for imports); ``arrays`` must have the
        storage's keys, and each leaf ``maxsize`` rows of the stored shape and dtype.
        """
        validate.check_same_layout(arrays, jax.eval_shape(self.global_storage))
        return self.replace(
            storage=storage.from_global_order(
                arrays, self.subbuffer_size, self.buffer_num, self.storage_memory_kind
            )
        )

    def _gather(self, index: jax.Array, keys: tuple[str, ...] | None = None) -> dict:
        """The stored fields ``keys`` (default: all) at in-range global slots ``index``."""
        fields = self.storage if keys is None else {k: self.storage[k] for k in keys}
        return storage.gather(fields, index, self.storage_memory_kind)

    def write(self, slots: chex.Array, rows: dict, *, unique: bool = False) -> ReplayBuffer:
        """This buffer with stored ``rows`` (leading axis k) written at global ``slots``.

        Low level (no counter update): for composed buffers that plan their own writes. A
        slot ``>= maxsize`` drops its row; ``rows`` are already in the stored form
        (``storage.to_stored``). ``unique`` promises distinct slots.
        """
        return self.replace(
            storage=storage.write(
                self.storage, slots, rows, unique=unique, memory_kind=self.storage_memory_kind
            )
        )

    # ------------------------------------------------------------------ add
    @compiled_when_eager()
    def add_rows(self, rows: dict, ids: jax.Array | None) -> tuple[Any, AddResult]:
        """:meth:`add` on rows already checked by :meth:`check_batch`.

        With one row per sub-buffer in lock step (a ``lockstep`` buffer, or one sub-buffer
        with ``buffer_ids=None``) the rows are one contiguous block of the time-major
        storage and are written with ``dynamic_update_slice``; otherwise with a scatter.
        Both are in place when the state is donated or carried by ``lax.scan``.
        """
        done = rows["terminated"] | rows["truncated"]
        slots, result, counters = episodes.plan_add(
            self.episode_counters(), self.subbuffer_size, ids, rows["rew"], done
        )
        stored = storage.to_stored(rows, save_only_last_obs=self.save_only_last_obs)
        if ids is None and (self.lockstep or self.buffer_num == 1):
            head = self.insertion_idx
            runtime_check(
                jnp.all(head == head[0]),
                "jaxbuf: lockstep buffer whose sub-buffers are at different insertion slots",
            )
            new = self.replace(
                storage=storage.write_block(self.storage, head[0], stored, self.storage_memory_kind)
            )
        else:
            new = self.write(slots, stored, unique=ids is None)
        return new.with_counters(counters), result

    def check_batch(self, batch: dict, buffer_ids=None) -> tuple[dict, jax.Array | None]:
        """Validate an ``add`` batch; return its rows with a leading axis and the checked ids.

        Raises at trace time, naming the field, on a missing or extra key, or a shape/dtype
        that does not match :meth:`input_spec`; with concrete values also on a value that
        storing would change and on a ``buffer_ids`` entry outside ``[0, buffer_num)``.
        """
        if not isinstance(batch, Mapping):
            raise InputError(message("add", f"expects a dict batch, got {type(batch).__name__}"))
        batch = dict(batch)
        if self.ignore_obs_next:
            batch.pop("obs_next", None)
        done = batch.pop("done", None)
        spec = self.input_spec()
        single, k = self._rows_of(batch, spec, buffer_ids)
        rows = validate.flatten_checked(batch, spec, () if single else (k,))
        if single:
            rows = jax.tree_util.tree_map(lambda x: x[None], rows)
            done = None if done is None else jnp.asarray(done)[None]
        if done is not None:
            self._check_done(done, rows, k)
        if is_traced(self, buffer_ids):
            # add_rows then runs in the caller's trace, where host rows cannot be indexed by
            # traced slots: make them JAX arrays (an eager add transfers them in its jit call).
            rows = jax.tree_util.tree_map(jnp.asarray, rows)
        if buffer_ids is None:
            return rows, None
        if self.lockstep:
            raise InputError(
                "jaxbuf: a lockstep buffer takes one row per sub-buffer in order; call add "
                "with buffer_ids=None (create the buffer with lockstep=False to route rows)"
            )
        return rows, self._check_ids(buffer_ids, k)

    def _rows_of(self, batch: dict, spec: dict, buffer_ids: Any) -> tuple[bool, int]:
        """``(single, k)``: whether the batch is one transition without a leading axis, and
        its number of rows, read from the first leaf of ``act`` (any pytree)."""
        act = validate.host_leaves(batch.get("act"))
        if act is None:
            return False, self.buffer_num  # flatten_checked names the missing key
        try:
            leaf = jax.tree_util.tree_structure(spec["act"]).flatten_up_to(act)[0]
        except (ValueError, TypeError):
            return False, self.buffer_num  # flatten_checked names the structure
        want = jax.tree_util.tree_leaves(spec["act"])[0].shape
        single = np.ndim(leaf) == len(want)
        if single and (self.buffer_num != 1 or buffer_ids is not None):
            raise InputError(
                "jaxbuf: a batch without a leading axis is only accepted by a plain "
                "ReplayBuffer with buffer_ids=None; field 'act' expected shape "
                f"(k, *{want}), got {np.shape(leaf)}"
            )
        k = 1 if single else (np.shape(leaf)[0] if np.ndim(leaf) > 0 else 1)
        if buffer_ids is None and not single and k != self.buffer_num:
            hint = (
                f"; to add {k} rows to this one-sub-buffer buffer pass "
                f"buffer_ids=jnp.zeros({k}, jnp.int32) (they go to consecutive slots, in row "
                "order)"
                if self.buffer_num == 1
                else f"; pass buffer_ids (int[{k}]) to route the rows to sub-buffers"
            )
            raise InputError(
                f"jaxbuf: with buffer_ids=None the batch needs buffer_num={self.buffer_num} "
                f"rows, field 'act' has {k} (one row per sub-buffer){hint}"
            )
        return single, k

    def _check_ids(self, buffer_ids: Any, k: int) -> jax.Array:
        """``buffer_ids`` as int32[k]; concrete ids outside ``[0, buffer_num)`` raise (under
        ``jit`` such a row is dropped, and :func:`jaxbuf.checked` raises)."""
        ids = validate.as_dtype(validate.host_leaves(buffer_ids), None)
        if ids.shape != (k,) or not jnp.issubdtype(ids.dtype, jnp.integer):
            raise InputError(
                f"jaxbuf: buffer_ids expected an int array of shape ({k},), got shape "
                f"{ids.shape} dtype {ids.dtype}"
            )
        if is_traced(ids):
            runtime_check(
                jnp.all((ids >= 0) & (ids < self.buffer_num)),
                f"jaxbuf: buffer_ids out of range [0, {self.buffer_num})",
            )
        note = f" (this buffer has {self.buffer_num} sub-buffer(s))"
        validate.check_range("add", "buffer_ids", ids, self.buffer_num, note)
        return validate.as_dtype(ids, jnp.int32)

    @staticmethod
    def _check_done(done, rows, k) -> None:
        derived = rows["terminated"] | rows["truncated"]
        validate.check_leaf("done", done, (k,), jnp.dtype(bool))
        done = jnp.asarray(done, bool)
        if is_traced(done, derived):
            runtime_check(
                jnp.all(done == derived),
                "jaxbuf: field 'done' disagrees with terminated | truncated",
            )
        elif not bool(jnp.all(done == derived)):
            raise InputError(
                "jaxbuf: field 'done' disagrees with terminated | truncated "
                f"(done={np.asarray(done)}, derived={np.asarray(derived)}); "
                "done is always derived, pass terminated and truncated"
            )


class VectorReplayBuffer(metaclass=VectorKind):
    """Tianshou's ``VectorReplayBuffer``: a :class:`ReplayBuffer` with ``buffer_num`` sub-buffers.

    ``VectorReplayBuffer.create(example, total_size, buffer_num, **options)`` is
    ``ReplayBuffer.create(example, total_size, buffer_num=buffer_num, **options)``: one class,
    so a jitted function always returns the class it was given. ``isinstance(buf,
    VectorReplayBuffer)`` is true for a ``ReplayBuffer`` with more than one sub-buffer.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxbuf import ReplayBuffer, VectorReplayBuffer
      >>> ex = dict(obs=jnp.zeros(3), act=jnp.int32(0), rew=jnp.float32(0),
      ...           terminated=False, truncated=False)
      >>> buf = VectorReplayBuffer.create(ex, 8, 4)
      >>> type(buf) is ReplayBuffer, isinstance(buf, VectorReplayBuffer), buf.buffer_num
      (True, True, 4)
    """

    kind = ReplayBuffer

    @staticmethod
    def create(example: dict, total_size: int, buffer_num: int, **options: Any) -> ReplayBuffer:
        """An empty buffer of ``buffer_num`` sub-buffers of ``ceil(total_size / buffer_num)``
        slots; ``options`` as :meth:`ReplayBuffer.create`."""
        return ReplayBuffer.create(example, total_size, buffer_num=buffer_num, **options)
