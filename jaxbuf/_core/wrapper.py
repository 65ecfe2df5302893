"""``Wrapper``: the base of buffers that hold a core ``ReplayBuffer`` and add state beside it.

The prioritized and HER buffers keep a core :class:`jaxbuf.ReplayBuffer` in a ``buffer``
field and add priorities or relabelling. :class:`Wrapper` takes the primitives of
:class:`jaxbuf._core.base.Buffer` from the wrapped buffer once, for all of them, so each
variant overrides only what it changes.
"""

from __future__ import annotations

from typing import Any

import jax

from jaxbuf._core.base import Buffer
from jaxbuf._core.dispatch import compiled_when_eager


class Wrapper(Buffer):
    """Base of the buffers that hold a core ``ReplayBuffer`` in ``buffer`` and add state.

    The storage, layout, counters, options and the add of the wrapped buffer are this
    buffer's too; a subclass overrides what it changes (e.g. ``add_rows`` to also update
    priorities, ``sample`` to relabel goals) and the rest of the API comes from
    :class:`Buffer`.
    """

    buffer: Any

    # The primitives, taken from the wrapped core buffer.
    layout = property(lambda self: self.buffer.layout, doc="The wrapped buffer's layout.")
    insertion_idx = property(lambda self: self.buffer.insertion_idx, doc="Next local slots.")
    lengths = property(lambda self: self.buffer.lengths, doc="Stored transitions per part.")
    last_index = property(lambda self: self.buffer.last_index, doc="Latest global slots.")
    stack_num = property(lambda self: self.buffer.stack_num, doc="Frames per stacked read.")
    sample_avail = property(lambda self: self.buffer.sample_avail, doc="See ``create``.")
    ignore_obs_next = property(lambda self: self.buffer.ignore_obs_next, doc="See ``create``.")
    subbuffer_size = property(lambda self: self.buffer.subbuffer_size, doc="Slots per part.")
    buffer_num = property(lambda self: self.buffer.buffer_num, doc="Number of sub-buffers.")
    storage = property(lambda self: self.buffer.storage, doc="The time-major storage dict.")
    storage_memory_kind = property(
        lambda self: self.buffer.storage_memory_kind, doc="Where the storage lives (``create``)."
    )

    def _gather(self, index: jax.Array, keys: tuple[str, ...] | None = None) -> dict:
        return self.buffer._gather(index, keys)

    @property
    def _stack_shape(self) -> tuple[int, ...]:
        return self.buffer._stack_shape

    def _reset(self, keep_statistics: bool) -> Any:
        """The wrapped buffer reset (a subclass with per-slot state clears that too)."""
        return self.replace(buffer=self.buffer._reset(keep_statistics))

    def input_spec(self) -> dict:
        """Shape/dtype of one transition as ``add`` expects it (no batch axis)."""
        return self.buffer.input_spec()

    def global_storage(self) -> dict:
        """The storage as ``[maxsize, ...]`` arrays in global-slot order (a copy)."""
        return self.buffer.global_storage()

    def check_batch(self, batch: dict, buffer_ids: Any = None) -> tuple[dict, Any]:
        """The wrapped buffer's :meth:`~jaxbuf.ReplayBuffer.check_batch`."""
        return self.buffer.check_batch(batch, buffer_ids)

    @compiled_when_eager()
    def add_rows(self, rows: dict, ids: jax.Array | None) -> tuple[Any, Any]:
        """The wrapped buffer's add of checked rows; returns this buffer around the result."""
        buffer, result = self.buffer.add_rows(rows, ids)
        return self.replace(buffer=buffer), result
