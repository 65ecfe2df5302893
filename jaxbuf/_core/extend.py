"""``Buffer.extend``: append many rows in one compiled computation.

``buf.extend(rows, buffer_ids)`` has exactly the result of N single adds in row order (the
same storage, counters, episode statistics and unfinished tails, with wrap-around when N
exceeds a sub-buffer). It is the buffer's own ``check_batch`` and ``add_rows`` with one
buffer id per row: the add planner (:func:`jaxbuf._core.episodes.plan_add`) already applies
many rows per sub-buffer at once, grouping the rows by id and running segmented scans over
their episodes, so there is no loop over rows.

Routing when ``buffer_ids`` is None:

* one sub-buffer: every row goes to it;
* a ``lockstep`` buffer of ``n`` sub-buffers: the rows are ``N / n`` steps of the ``n``
  envs in time-major order (row ``i`` goes to sub-buffer ``i mod n``), so the result is that
  of ``N / n`` lock-step adds; ``N`` must be a multiple of ``n``;
* any other vector buffer (and a cached buffer's caches): whole episodes round-robin. The
  rows are read as one stream of consecutive episodes, a new episode starting after each
  row whose ``terminated | truncated`` is set; episode ``e`` of the call (``e = 0`` for the
  first row) goes to sub-buffer ``e mod n``. Episode ``e < n`` continues the unfinished
  episode of sub-buffer ``e``, if it has one.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxbuf._core.checks import is_traced
from jaxbuf.errors import InputError, message


def core_of(buf: Any) -> Any:
    """The core ``ReplayBuffer`` whose ``check_batch`` a buffer uses (the one ids address)."""
    from jaxbuf.buffers import ReplayBuffer

    seen = buf
    while not isinstance(seen, ReplayBuffer):
        inner = getattr(seen, "caches", None)
        if inner is None:
            inner = getattr(seen, "buffer", None)
        if inner is None:
            raise InputError(f"jaxbuf: extend: {type(buf).__name__} holds no core buffer")
        seen = inner
    return seen


def episode_ids(done: jax.Array, n: int) -> jax.Array:
    """int32[N]: ``e mod n`` for the episode ``e`` of each row (a new one after each done)."""
    done = jnp.asarray(done, bool).astype(jnp.int32)
    episode = jnp.cumsum(done) - done
    return (episode % n).astype(jnp.int32)


def _row_count(rows: dict, spec: dict) -> int:
    """N, the leading axis of ``act``; raises unless ``act`` carries exactly one leading axis."""
    if "act" not in rows:
        raise InputError(message("extend", f"rows lack the field 'act'; fields are {sorted(spec)}"))
    leaves = jax.tree_util.tree_leaves(rows["act"])
    want = jax.tree_util.tree_leaves(spec["act"])
    if len(leaves) != len(want) or not leaves:
        raise InputError(message("extend", "field 'act' does not match the buffer's structure"))
    shape, expected = np.shape(leaves[0]), tuple(want[0].shape)
    if len(shape) != len(expected) + 1 or tuple(shape[1:]) != expected:
        raise InputError(
            message(
                "extend",
                f"rows need a leading axis of N rows: field 'act' expected shape "
                f"(N, *{expected}), got {tuple(shape)}",
            )
        )
    return int(shape[0])


def extend(buf: Any, rows: dict, buffer_ids: Any = None) -> tuple[Any, Any]:
    """``buf.extend(rows, buffer_ids)``: see :meth:`jaxbuf._core.base.Buffer.extend`."""
    if not isinstance(rows, dict):
        raise InputError(message("extend", f"rows must be a dict, got {type(rows).__name__}"))
    core = core_of(buf)
    n_rows = _row_count(rows, buf.input_spec())
    if n_rows == 0:
        raise InputError(message("extend", "rows have N = 0 rows; pass at least one"))
    n = core.buffer_num
    lockstep = bool(getattr(core, "lockstep", False))
    if lockstep and buffer_ids is not None:
        raise InputError(
            message(
                "extend",
                "a lockstep buffer takes rows in time-major order (row i to sub-buffer "
                "i mod buffer_num); call extend with buffer_ids=None",
            )
        )
    if lockstep and n_rows % n:
        raise InputError(
            message(
                "extend",
                f"a lockstep buffer of buffer_num={n} needs a multiple of {n} rows, got {n_rows}",
            )
        )
    placeholder = np.zeros(n_rows, np.int32) if buffer_ids is None else buffer_ids
    checker = core.replace(lockstep=False) if lockstep else buf
    checked_rows, ids = checker.check_batch(rows, placeholder)
    mode = "given" if buffer_ids is not None else ("lockstep" if lockstep else "episodes")
    # With one sub-buffer the route is all zeros; it is still computed from the data (as
    # episode ids mod 1) so that XLA does not constant-fold the planner over N constant ids.
    if is_traced(buf, checked_rows, ids):
        return _routed_add(buf, checked_rows, ids, mode=mode, n=n)
    return _routed_add_jit(buf, checked_rows, ids, mode=mode, n=n)


def _routed_add(buf: Any, rows: dict, ids: jax.Array, *, mode: str, n: int) -> tuple[Any, Any]:
    """The routing of the module docstring, then the buffer's ``add_rows``."""
    rows = jax.tree_util.tree_map(jnp.asarray, rows)  # host rows meet traced indices below
    if mode == "lockstep":
        ids = (jnp.arange(ids.shape[0], dtype=jnp.int32) % n).astype(jnp.int32)
    elif mode == "episodes":
        ids = episode_ids(rows["terminated"] | rows["truncated"], n)
    return buf.add_rows(rows, ids)


_routed_add_jit = jax.jit(_routed_add, static_argnames=("mode", "n"))
