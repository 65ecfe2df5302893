"""Vector buffers sharded over a mesh axis: placement, shard-local ``add``, ``sample`` and
priority updates.

A sharded buffer is an ordinary :class:`jaxbuf.VectorReplayBuffer` (or
:class:`jaxbuf.PrioritizedVectorReplayBuffer`) whose leaves are global ``jax.Array``s split
over the sub-buffer axis: the time-major storage ``[m, buffer_num, ...]`` with
``NamedSharding(mesh, P(None, axis))`` and the per-sub-buffer counters ``[buffer_num, ...]``
with ``P(axis)`` (:func:`partition_specs`). With ``S = mesh.shape[axis]`` shards and
``buffer_num % S == 0`` each device holds ``L = buffer_num / S`` *whole* sub-buffers: storage
columns and counter rows ``[s*L, (s+1)*L)`` of shard ``s``, i.e. the global slots
``[s*L*m, (s+1)*L*m)``. Other mesh axes replicate the buffer. A prioritized buffer's priority
tree is, in this layout, a stack of ``S`` trees (leading axis ``P(axis)``), tree ``s`` over
shard ``s``'s ``L*m`` slots; ``max_prio`` and ``beta`` are replicated.

Because episodes never cross sub-buffers (Tianshou's ``VectorReplayBuffer``), shard ``s`` can
run the single-device kernels on its own block: :func:`shard_add`, :func:`shard_sample` and
:func:`shard_update_weight` use ``jax.shard_map`` to rebuild a local buffer of ``L``
sub-buffers (and its own tree) from the local blocks and call its methods. Every index a
shard returns is made global by adding the shard's offset ``s*L*m``. The compiled shard-local
programs contain no cross-device collective (see :func:`collectives`).
``shard_sample(..., mode="global")`` draws with the unsharded buffer's law while moving only
``O(S)`` scalars and the sampled rows (:func:`collective_sizes`).

Multi-host: call ``jax.distributed.initialize`` first and use a mesh over ``jax.devices()``;
the same functions run on every process (SPMD). Each process passes its own rows through
:func:`global_batch` (``jax.make_array_from_process_local_data``).

Modules: ``layout`` (placement and conversion), ``add``, ``sample``, ``priorities``,
``programs`` (collectives, whole-buffer reads), ``returns`` (shard-local n-step and GAE),
``checkpoint`` (:func:`restore_sharded`).
"""

from jaxbuf.sharding._views import local_count, shard_count
from jaxbuf.sharding.add import shard_add
from jaxbuf.sharding.checkpoint import restore_sharded
from jaxbuf.sharding.layout import (
    buffer_sharding,
    create_sharded,
    global_batch,
    partition_specs,
    process_rank,
    process_subbuffers,
    shard_buffer,
    sharded_like,
    unshard,
)
from jaxbuf.sharding.priorities import UPDATE_MODES, shard_update_weight
from jaxbuf.sharding.programs import (
    COLLECTIVE_OPS,
    collective_sizes,
    collectives,
    global_apply,
)
from jaxbuf.sharding.returns import shard_episodic_return, shard_nstep_targets
from jaxbuf.sharding.sample import SAMPLE_MODES, shard_sample

__all__ = [
    "COLLECTIVE_OPS",
    "SAMPLE_MODES",
    "UPDATE_MODES",
    "buffer_sharding",
    "collective_sizes",
    "collectives",
    "create_sharded",
    "global_apply",
    "global_batch",
    "local_count",
    "partition_specs",
    "process_rank",
    "process_subbuffers",
    "restore_sharded",
    "shard_add",
    "shard_buffer",
    "shard_count",
    "shard_episodic_return",
    "shard_nstep_targets",
    "shard_sample",
    "shard_update_weight",
    "sharded_like",
    "unshard",
]
