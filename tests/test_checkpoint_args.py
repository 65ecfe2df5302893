"""BufferSave / BufferRestore as orbax items beside a flax TrainState, and what they refuse."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from checkpoint_roundtrip import abstract_of, assert_bit_identical
from flax.training import train_state
from helpers import transition

import jaxbuf
import jaxbuf.checkpoint as ckpt

EXAMPLE = transition((3,), obs_next=True)


def filled(buf, steps: int = 7):
    """``buf`` after ``steps`` adds of one row per sub-buffer; episodes end every 3 steps."""
    n = buf.buffer_num
    for t in range(steps):
        row = {
            "obs": jnp.full((n, 3), t, jnp.float32),
            "obs_next": jnp.full((n, 3), t + 1, jnp.float32),
            "act": jnp.full((n,), t, jnp.int32),
            "rew": jnp.full((n,), 0.5 * t, jnp.float32),
            "terminated": jnp.full((n,), t % 3 == 2),
            "truncated": jnp.zeros((n,), bool),
        }
        buf, _ = buf.add(row)
    return buf


def make_state() -> train_state.TrainState:
    params = {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(3)}
    return train_state.TrainState.create(apply_fn=None, params=params, tx=optax.adam(1e-3))


def manager(path, *, async_save: bool) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(enable_async_checkpointing=async_save)
    return ocp.CheckpointManager(path, options=options)


def composite_save(ts, buf) -> ocp.args.Composite:
    return ocp.args.Composite(state=ocp.args.StandardSave(ts), buffer=ckpt.BufferSave(buf))


def composite_restore(ts_like, like) -> ocp.args.Composite:
    return ocp.args.Composite(
        state=ocp.args.StandardRestore(ts_like), buffer=ckpt.BufferRestore(like=like)
    )


@pytest.fixture(scope="module")
def buf():
    return filled(jaxbuf.VectorReplayBuffer.create(EXAMPLE, 12, 2, stack_num=2))


@pytest.mark.parametrize("async_save", [False, True], ids=["sync", "async"])
def test_trainstate_and_buffer_round_trip(tmp_path, buf, async_save):
    ts = make_state().replace(step=5)
    with manager(tmp_path, async_save=async_save) as mngr:
        assert mngr.save(5, args=composite_save(ts, buf))
        if async_save:
            mngr.wait_until_finished()
        assert mngr.all_steps() == [5]
    abstract_ts = jax.eval_shape(make_state)
    with manager(tmp_path, async_save=async_save) as mngr:
        out = mngr.restore(5, args=composite_restore(abstract_ts, abstract_of(buf)))
        assert_bit_identical(out["buffer"], buf, "buffer with like")
        assert int(out["state"].step) == 5
        jax.tree.map(np.testing.assert_array_equal, out["state"].params, ts.params)
        jax.tree.map(np.testing.assert_array_equal, out["state"].opt_state, ts.opt_state)
        # without like: classes and static configuration come from the stored description
        rebuilt = mngr.restore(5, args=ocp.args.Composite(buffer=ckpt.BufferRestore()))
        assert_bit_identical(rebuilt["buffer"], buf, "buffer without like")
    # a fresh manager and no args at all: orbax finds the handler from the step's metadata
    with manager(tmp_path, async_save=False) as mngr:
        assert_bit_identical(mngr.restore(5)["buffer"], buf, "restore without args")


def test_prioritized_buffer_round_trip(tmp_path):
    pbuf = jaxbuf.PrioritizedVectorReplayBuffer.create(EXAMPLE, 8, 2, alpha=0.6, beta=0.4)
    pbuf = filled(pbuf, steps=4)
    pbuf = pbuf.update_weight(jnp.array([0, 3]), jnp.array([2.0, 0.25]))
    with manager(tmp_path, async_save=True) as mngr:
        mngr.save(1, args=ocp.args.Composite(buffer=ckpt.BufferSave(pbuf)))
        mngr.wait_until_finished()
        out = mngr.restore(1, args=ocp.args.Composite(buffer=ckpt.BufferRestore(like=pbuf)))
    assert_bit_identical(out["buffer"], pbuf, "prioritized")


def _saved(tmp_path, buf):
    mngr = manager(tmp_path, async_save=False)
    mngr.save(0, args=composite_save(make_state(), buf))
    return mngr


MISMATCHES = {
    "stack_num": (
        lambda: jaxbuf.ReplayBuffer.create(EXAMPLE, 8),
        lambda: jaxbuf.ReplayBuffer.create(EXAMPLE, 8, stack_num=4),
        ["stack_num (static): like expects 4, checkpoint has 1"],
    ),
    "replay_into_vector": (
        lambda: jaxbuf.ReplayBuffer.create(EXAMPLE, 8),
        lambda: jaxbuf.VectorReplayBuffer.create(EXAMPLE, 8, 4),
        [
            "buffer_num (static): like expects 4, checkpoint has 1",
            "subbuffer_size (static): like expects 2, checkpoint has 8",
            "storage.obs: like expects shape (2, 4, 3) dtype float32, checkpoint has shape "
            "(8, 1, 3) dtype float32",
        ],
    ),
    "field_shape": (
        lambda: jaxbuf.ReplayBuffer.create(EXAMPLE, 8),
        lambda: jaxbuf.ReplayBuffer.create(transition((4,), obs_next=True), 8),
        ["storage.obs: like expects shape (8, 1, 4) dtype float32, checkpoint has shape (8, 1, 3)"],
    ),
    "field_dtype": (
        lambda: jaxbuf.ReplayBuffer.create(EXAMPLE, 8),
        lambda: jaxbuf.ReplayBuffer.create({**EXAMPLE, "act": np.float32(0)}, 8),
        [
            "storage.act: like expects shape (8, 1) dtype float32, checkpoint has shape (8, 1) "
            "dtype int32"
        ],
    ),
    "missing_field": (
        lambda: jaxbuf.ReplayBuffer.create(EXAMPLE, 8),
        lambda: jaxbuf.ReplayBuffer.create({**EXAMPLE, "cost": np.float32(0)}, 8),
        ["checkpoint lacks ['cost']"],
    ),
}


@pytest.mark.parametrize("case", sorted(MISMATCHES))
def test_mismatch_refused_inside_composite(tmp_path, case):
    saved, target, expected = MISMATCHES[case]
    with _saved(tmp_path, saved()) as mngr:
        with pytest.raises(ckpt.CheckpointMismatchError) as err:
            mngr.restore(0, args=composite_restore(make_state(), target()))
    for line in expected:
        assert line in str(err.value)
    assert str(tmp_path / "0" / "buffer") in str(err.value)


def test_plain_pytree_route_restores_the_stack_num_mismatch_silently(tmp_path):
    """What docs/checkpoints.md warns about: StandardSave/StandardRestore of the buffer
    pytree has no static configuration to compare, so stack_num=1 lands in stack_num=4."""
    saved = filled(jaxbuf.ReplayBuffer.create(EXAMPLE, 8))
    target = jaxbuf.ReplayBuffer.create(EXAMPLE, 8, stack_num=4)
    with manager(tmp_path, async_save=False) as mngr:
        mngr.save(0, args=ocp.args.Composite(buffer=ocp.args.StandardSave(saved)))
        out = mngr.restore(0, args=ocp.args.Composite(buffer=ocp.args.StandardRestore(target)))
    assert out["buffer"].stack_num == 4
    np.testing.assert_array_equal(out["buffer"].storage["obs"], saved.storage["obs"])


def test_jaxbuf_save_readable_through_buffer_restore(tmp_path, buf):
    generation = jaxbuf.save(tmp_path, buf)
    with manager(tmp_path, async_save=False) as mngr:
        out = mngr.restore(generation, args=ocp.args.Composite(buffer=ckpt.BufferRestore(buf)))
        assert_bit_identical(out["buffer"], buf, "jaxbuf.save via BufferRestore")
        rebuilt = mngr.restore(generation, args=ocp.args.Composite(buffer=ckpt.BufferRestore()))
        assert_bit_identical(rebuilt["buffer"], buf, "without like")
        stacked4 = jaxbuf.VectorReplayBuffer.create(EXAMPLE, 12, 2, stack_num=4)
        with pytest.raises(ckpt.CheckpointMismatchError, match="stack_num"):
            mngr.restore(generation, args=ocp.args.Composite(buffer=ckpt.BufferRestore(stacked4)))


def test_buffer_save_readable_through_jaxbuf_restore(tmp_path, buf):
    with _saved(tmp_path, buf) as mngr:
        assert_bit_identical(ckpt.restore_buffer(mngr, 0, like=buf), buf, "restore_buffer")
    assert_bit_identical(jaxbuf.restore(tmp_path), buf, "jaxbuf.restore")
    assert_bit_identical(jaxbuf.restore(tmp_path, like=abstract_of(buf)), buf, "with like")
    with pytest.raises(ckpt.CheckpointMismatchError, match="buffer_num"):
        jaxbuf.restore(tmp_path, like=jaxbuf.ReplayBuffer.create(EXAMPLE, 12, stack_num=2))


def test_edited_description_fails_the_consistency_check(tmp_path):
    with _saved(tmp_path, filled(jaxbuf.ReplayBuffer.create(EXAMPLE, 8))) as mngr:
        path = tmp_path / "0" / "buffer" / "jaxbuf_buffer.json"
        meta = json.loads(path.read_text())
        meta["tree"]["static"]["subbuffer_size"] = 6
        path.write_text(json.dumps(meta))
        with pytest.raises(ckpt.CheckpointCorruptError, match="subbuffer_size=6"):
            mngr.restore(0, args=ocp.args.Composite(buffer=ckpt.BufferRestore()))
        meta["schema_version"] = 99
        path.write_text(json.dumps(meta))
        with pytest.raises(ckpt.SchemaVersionError, match="schema version 99"):
            mngr.restore(0, args=ocp.args.Composite(buffer=ckpt.BufferRestore()))
        path.unlink()
        with pytest.raises(ckpt.CheckpointNotFoundError, match="no jaxbuf_buffer.json"):
            mngr.restore(0, args=ocp.args.Composite(buffer=ckpt.BufferRestore()))


def test_unregistered_class_refused_on_save(tmp_path):
    from flax import struct

    class Loose(struct.PyTreeNode):
        x: jax.Array

    with manager(tmp_path, async_save=False) as mngr:
        with pytest.raises(TypeError, match="register_buffer"):
            mngr.save(0, args=ocp.args.Composite(buffer=ckpt.BufferSave(Loose(jnp.zeros(2)))))
