"""Sharded prioritized replay on every device of the process: sample + priority update.

A ``jaxbuf.sharding.create_sharded`` prioritized buffer of 64 sub-buffers split over a mesh
of all ``jax.devices()`` along ``"env"``, against the unsharded
``PrioritizedVectorReplayBuffer`` on one device. One operation is a sample of 256 rows in
all followed by the priority update of those rows, as one step of a jitted ``lax.scan``
carrying the buffer:

* ``jaxbuf``: ``buf.sample`` + ``buf.update_weight`` on one device;
* ``jaxbuf[sharded]``: ``shard_sample(mode="local")`` + ``shard_update_weight(mode="local")``
  (no collective but the ``max_prio`` scalar);
* ``jaxbuf[sharded-global]``: ``mode="global"`` for both (the unsharded law; all-gathers of
  ``S`` scalars, reduce-scatter of the sampled rows, all-gather of the updated indices);
* ``flashbax[per-device]``: one independent flashbax
  ``make_prioritised_flat_buffer(capacity / D, add_batch_size=64 / D, sample_batch_size=256 / D,
  priority_exponent=0.6)`` per device (``D`` devices, the same capacity and 64 rows per step
  in all as jaxbuf), its states stacked on a leading device axis and run under one
  ``jax.shard_map`` over the mesh: each device samples its ``256 / D`` rows from its own
  buffer with its own key (the step key folded with the device index) and sets their
  priorities. Its law is **local** like ``jaxbuf[sharded]``: every device draws its own share
  from its own buffer, not the unsharded law of the whole buffer, and nothing is
  communicated, so it is the cost floor to compare with jaxbuf's local mode.

Run it once per device count with forced host devices on a CPU
(``XLA_FLAGS=--xla_force_host_platform_device_count=D``); they share the machine's cores, so
the figures measure overhead, not a speed-up.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import data, peers
from benchmarks.harness import Case, compile_jit, unavailable
from benchmarks.workloads.common import Cell
from benchmarks.workloads.prioritized import ALPHA, BETA, flashbax_device

UNIT = "us per sample + update of 256"
WORKLOAD = "sharded_prioritized/sample_update"
BATCH = 256


def _rows(n: int) -> dict:
    rng = np.random.default_rng(0)
    return {
        "obs": rng.normal(size=(n, data.N_ENV, 16)).astype(np.float32),
        "act": rng.integers(0, 4, (n, data.N_ENV)).astype(np.int32),
        "rew": rng.normal(size=(n, data.N_ENV)).astype(np.float32),
        "terminated": rng.random((n, data.N_ENV)) < 0.01,
        "truncated": np.zeros((n, data.N_ENV), bool),
    }


def _case(lib, step, buf, keys, params) -> Case:
    def run(b, ks):
        return jax.lax.scan(lambda c, k: (step(c, k), None), b, ks)[0]

    cell = Cell(buf)
    compiled, secs = compile_jit(run, buf, keys, donate_argnums=(0,))

    def chunk():
        cell.value = compiled(cell.value, keys)
        return jax.block_until_ready(cell.value)

    return Case(WORKLOAD, params, lib, chunk, len(keys), UNIT, secs)


def _new_priority(rows: dict) -> jax.Array:
    return jnp.abs(rows["obs"][:, 0]) + 0.1  # stands in for a TD error from the batch


def _flashbax_per_device(mesh, fill: dict, keys, params):
    """One flashbax prioritised flat buffer per device of ``mesh``, each filled with its
    ``64 / D`` envs of ``fill`` (``[slots, 64, ...]``) and stepped under ``shard_map``."""
    fbx, why = peers.module("flashbax")
    if fbx is None:
        return unavailable(WORKLOAD, params, "flashbax[per-device]", UNIT, why)
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    d = mesh.devices.size
    envs = data.N_ENV // d
    fb = fbx.make_prioritised_flat_buffer(
        max_length=params["capacity"] // d,
        min_length=envs,
        sample_batch_size=BATCH // d,
        add_batch_size=envs,
        priority_exponent=ALPHA,
        device=flashbax_device(),
    )
    example = {k: v[0, 0] for k, v in fill.items()}
    # [slots, 64, ...] -> [D, slots, 64 / D, ...]: device i holds envs i * 64/D .. (i+1) * 64/D
    split = {
        k: np.moveaxis(v.reshape(v.shape[0], d, envs, *v.shape[2:]), 1, 0) for k, v in fill.items()
    }

    def filled(xs):
        return jax.lax.scan(lambda s, x: (fb.add(s, x), None), fb.init(example), xs)[0]

    state = jax.jit(jax.vmap(filled))(split)
    state = jax.device_put(state, NamedSharding(mesh, P("env")))

    def local(state, key):
        own = jax.tree_util.tree_map(lambda x: x[0], state)
        key = jax.random.fold_in(key, jax.lax.axis_index("env"))
        sample = fb.sample(own, key)
        prio = _new_priority(sample.experience.first)
        own = fb.set_priorities(own, sample.indices, prio)
        return jax.tree_util.tree_map(lambda x: x[None], own)

    # flashbax's sum-tree loop mixes device-varying and replicated values, which shard_map's
    # varying-axes check rejects; every output is per device (P("env")), so skip the check.
    step = jax.shard_map(
        local, mesh=mesh, in_specs=(P("env"), P()), out_specs=P("env"), check_vma=False
    )
    return _case("flashbax[per-device]", step, state, keys, params)


def groups(cfg):
    """One group: unsharded, shard-local, global and flashbax per device."""
    import jaxbuf
    from jaxbuf import sharding as shd

    devices = jax.devices()
    d = max(k for k in range(1, len(devices) + 1) if data.N_ENV % k == 0 and BATCH % k == 0)
    mesh = jax.make_mesh((d,), ("env",), devices=devices[:d])
    slots = max(64, cfg.episode_capacity // data.N_ENV)
    steps = max(16, cfg.scan_steps // 10)
    opts = {"alpha": ALPHA, "beta": BETA}
    example = {k: v[0, 0] for k, v in _rows(1).items()}
    fill = _rows(slots)
    plain = jaxbuf.PrioritizedVectorReplayBuffer.create(
        example, data.N_ENV * slots, data.N_ENV, **opts
    )
    plain = jax.jit(lambda b, xs: jax.lax.scan(lambda c, x: (c.add(x)[0], None), b, xs)[0])(
        plain, fill
    )
    sharded = shd.shard_buffer(plain, mesh, "env")
    keys = jax.random.split(jax.random.key(0), steps)
    params = {"devices": d, "capacity": slots * data.N_ENV}
    b = BATCH // d

    def step_plain(buf, k):
        rows, idx = buf.sample(k, BATCH)
        return buf.update_weight(idx, _new_priority(rows))

    def step_sharded(mode):
        def step(buf, k):
            rows, idx = shd.shard_sample(buf, k, b, mesh, "env", mode=mode)
            return shd.shard_update_weight(buf, idx, _new_priority(rows), mesh, "env", mode=mode)

        return step

    local_sample = lambda buf, k: shd.shard_sample(buf, k, b, mesh, "env")  # noqa: E731
    assert shd.collectives(local_sample, sharded, keys[0]) == set()
    copy = lambda t: jax.tree_util.tree_map(lambda x: x.copy(), t)  # noqa: E731
    yield [
        _case("jaxbuf", step_plain, plain, keys, params),
        _case("jaxbuf[sharded]", step_sharded("local"), copy(sharded), keys, params),
        _case("jaxbuf[sharded-global]", step_sharded("global"), copy(sharded), keys, params),
        _flashbax_per_device(mesh, fill, keys, params),
    ]
