"""Checkpoint round trips of every core buffer type, the manager, and the error messages."""

from __future__ import annotations

import json
import pickle
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from checkpoint_roundtrip import abstract_of, assert_bit_identical, assert_roundtrip
from flax import struct
from helpers import transition

import jaxbuf
import jaxbuf.checkpoint as ckpt

EXAMPLE = transition(
    (3,), obs_next=True, info={"x": np.int32(0), "y": jnp.zeros(2, jnp.bfloat16)}, extra=np.uint8(0)
)


def rows(buf: jaxbuf.ReplayBuffer, step: int) -> dict:
    """Deterministic rows for every sub-buffer; episodes end every few steps."""
    n = buf.buffer_num

    def leaf(spec, salt):
        size = n * int(np.prod(spec.shape, dtype=int))
        vals = (step * 7 + salt + np.arange(size)) % 97
        return jnp.asarray(vals.reshape((n, *spec.shape)), spec.dtype)

    spec = buf.input_spec()
    out = {
        k: jax.tree_util.tree_map(partial(leaf, salt=i), v)
        for i, (k, v) in enumerate(spec.items())
        if k not in ("terminated", "truncated")
    }
    ids = np.arange(n)
    out["terminated"] = jnp.asarray((step + ids) % 4 == 3)
    out["truncated"] = jnp.asarray((step + 2 * ids) % 5 == 4)
    return out


def stacked_rows(buf: jaxbuf.ReplayBuffer, steps: range) -> dict:
    """``rows`` for several steps, stacked on a leading axis (for ``lax.scan``)."""
    return jax.tree_util.tree_map(lambda *x: jnp.stack(x), *[rows(buf, s) for s in steps])


@jax.jit
def _add_all(buf, batches):
    return jax.lax.scan(lambda b, x: b.add(x), buf, batches)


def fill(buf, steps: int, start: int = 0):
    """``buf`` after adding ``rows`` of steps ``start .. start+steps-1``, and the AddResults."""
    return _add_all(buf, stacked_rows(buf, range(start, start + steps)))


def _continue_body(buf, batches, key):
    buf, results = jax.lax.scan(lambda b, x: b.add(x), buf, batches)
    everything = jnp.arange(buf.maxsize)
    links = (buf.prev(everything), buf.next(everything), buf.unfinished_index(), buf.all_indices())
    return buf, results, buf.sample(key, 5), links


_continue = jax.jit(_continue_body)


def continue_core(buf):
    """More adds, then samples and links with a fixed key: everything a restored buffer does."""
    return _continue(buf, stacked_rows(buf, range(100, 104)), jax.random.key(7))


def _frames_example():
    ex = dict(EXAMPLE)
    ex["obs"] = np.zeros((2, 3), np.float32)
    ex["obs_next"] = np.zeros((2, 3), np.float32)
    return ex


CORE = {
    "replay": lambda: jaxbuf.ReplayBuffer.create(EXAMPLE, 6),
    "replay_all_options": lambda: jaxbuf.ReplayBuffer.create(
        _frames_example(),
        6,
        stack_num=3,
        ignore_obs_next=True,
        save_only_last_obs=True,
        sample_avail=True,
    ),
    "vector_stack_ignore": lambda: jaxbuf.VectorReplayBuffer.create(
        EXAMPLE, 10, 3, stack_num=2, ignore_obs_next=True
    ),
    "vector_lockstep": lambda: jaxbuf.VectorReplayBuffer.create(EXAMPLE, 9, 3, lockstep=True),
}


@pytest.mark.parametrize("name", sorted(CORE))
def test_roundtrip_core(name, tmp_path):
    buf, _ = fill(CORE[name](), 9)
    restored = assert_roundtrip(buf, continue_core, tmp_path)
    assert type(restored) is type(buf)


def _per_buffer(batches, copies):
    """``copies`` different versions of ``batches`` stacked on a new leading axis."""
    return jax.tree_util.tree_map(
        lambda x: (
            jnp.stack([x] * copies)
            if x.dtype == bool
            else jnp.stack([x + c for c in range(copies)])
        ),
        batches,
    )


@jax.jit
def _continue_prioritized(buf, batches, key):
    buf, results = jax.lax.scan(lambda b, x: b.add(x), buf, batches)
    idx = buf.sample_indices(key, 6)
    buf = buf.update_weight(idx, jnp.arange(6.0) - 2.5).set_beta(0.7)
    return buf, results, buf.sample(key, 5), buf.get_weight(jnp.arange(buf.maxsize))


def test_roundtrip_prioritized(tmp_path):
    """The prioritized vector buffer: core state, sum and min trees, max_prio, beta, statics."""
    buf = jaxbuf.PrioritizedVectorReplayBuffer.create(
        EXAMPLE, 10, 3, alpha=0.6, beta=0.4, weight_norm=False, stack_num=2, ignore_obs_next=True
    )
    buf, _ = fill(buf, 9)
    buf = buf.update_weight(jnp.arange(4), jnp.asarray([0.5, 3.0, -2.0, 0.0]))

    def cont(b):
        return _continue_prioritized(b, stacked_rows(b, range(100, 104)), jax.random.key(2))

    restored = assert_roundtrip(buf, cont, tmp_path)
    assert float(restored.max_prio) == float(buf.max_prio) == np.float32(3.0 + 2**-23)
    assert restored.alpha == buf.alpha and restored.weight_norm == buf.weight_norm


def test_pickle_roundtrip():
    """Plain pickle works too (any pytree of jax arrays); it has no schema or atomicity."""
    buf, _ = fill(CORE["replay"](), 9)
    back = pickle.loads(pickle.dumps(buf))
    assert_bit_identical(back, buf)
    assert_bit_identical(continue_core(back), continue_core(buf))


def test_roundtrip_vmapped_stack(tmp_path):
    one = jaxbuf.VectorReplayBuffer.create(EXAMPLE, 6, 2)
    stack = jax.vmap(lambda _: jaxbuf.VectorReplayBuffer.create(EXAMPLE, 6, 2))(jnp.arange(3))
    stack, _ = jax.jit(jax.vmap(_add_all.__wrapped__))(
        stack, _per_buffer(stacked_rows(one, range(5)), 3)
    )
    vcontinue = jax.jit(jax.vmap(_continue_body, in_axes=(0, 0, None)))
    more = _per_buffer(stacked_rows(one, range(50, 54)), 3)

    restored = assert_roundtrip(stack, lambda b: vcontinue(b, more, jax.random.key(3)), tmp_path)
    assert restored.storage["obs"].shape == (3, 3, 2, 3)
    assert not np.array_equal(restored.storage["obs"][0], restored.storage["obs"][1])


@ckpt.register_buffer
class Wrapped(struct.PyTreeNode):
    """A user node nesting a core buffer, a typed key, a Python scalar and static fields."""

    inner: jaxbuf.VectorReplayBuffer
    key: jax.Array
    steps: int
    extras: tuple
    tag: tuple = struct.field(pytree_node=False, default=("a", 1))
    scale: float = struct.field(pytree_node=False, default=0.5)
    dtype: object = struct.field(pytree_node=False, default=jnp.float32)


def test_roundtrip_registered_nested_node(tmp_path):
    inner, _ = fill(CORE["vector_stack_ignore"](), 9)  # same shapes: reuses compiled code
    buf = Wrapped(
        inner=inner,
        key=jax.random.split(jax.random.key(1), 2),
        steps=5,
        extras=(jnp.arange(3), None, [jnp.ones(2, jnp.int8)]),
        tag=("b", 2, (3,)),
    )

    def cont(w):
        return continue_core(w.inner), jax.random.split(w.key[1]), w.steps + 1

    restored = assert_roundtrip(buf, cont, tmp_path)
    assert restored.tag == ("b", 2, (3,)) and restored.steps == 5
    assert restored.dtype == jnp.float32 and isinstance(restored.extras[2], list)


def test_unregistered_class_is_refused_at_save(tmp_path):
    class Loose(struct.PyTreeNode):
        x: jax.Array

    with pytest.raises(TypeError, match=r"Loose.*register_buffer"):
        ckpt.save(tmp_path / "c", Loose(x=jnp.zeros(2)))


@ckpt.register_buffer
class WithFn(struct.PyTreeNode):
    x: jax.Array
    fn: object = struct.field(pytree_node=False, default=None)


def test_unserializable_static_needs_like(tmp_path):
    buf = WithFn(x=jnp.arange(3.0), fn=jnp.sin)
    ckpt.save(tmp_path / "c", buf)
    with pytest.raises(ckpt.CheckpointMismatchError, match=r"'fn'.*pass like="):
        ckpt.restore(tmp_path / "c")
    assert_bit_identical(ckpt.restore(tmp_path / "c", like=buf), buf)


# ---------------------------------------------------------------- save generations
def test_save_generations_and_guard(tmp_path):
    a, _ = fill(jaxbuf.ReplayBuffer.create(EXAMPLE, 6), 9)
    b, _ = fill(a, 9, start=9)
    assert ckpt.save(tmp_path / "c", a) == 1
    assert ckpt.save(tmp_path / "c", b) == 2
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["2"]
    assert_bit_identical(ckpt.restore(tmp_path / "c"), b)
    with ckpt.checkpoint_manager(tmp_path / "train") as mngr:
        mngr.save(1, buffer=a, params={"w": jnp.ones(2)}, wait=True)
    with pytest.raises(ValueError, match=r"training checkpoint.*\['params'\]"):
        ckpt.save(tmp_path / "train", b)
    assert_bit_identical(ckpt.restore(tmp_path / "train"), a)


# ---------------------------------------------------------------- manager
def test_manager_async_steps_items_and_pruning(tmp_path):
    params = {"w": jnp.arange(4.0), "b": jnp.zeros((), jnp.int32)}
    saved = {}
    with ckpt.checkpoint_manager(tmp_path / "run", max_to_keep=2, save_interval_steps=2) as m:
        for step in range(1, 7):
            buf, _ = fill(CORE["replay"](), 9, start=step)
            params = jax.tree_util.tree_map(lambda p: p + 1, params)
            started = m.save(step, buffer=buf, params=params)
            assert started == (step % 2 == 0)
            if started:
                saved[step] = (buf, params)
        m.wait()
        assert m.all_steps() == [4, 6] and m.latest_step() == 6
        assert m.item_names(6) == ["buffer", "params"]
        out = m.restore(like=abstract_of(buf), params=abstract_of(params))
        assert out.step == 6
        assert_bit_identical(out.buffer, saved[6][0])
        assert_bit_identical(out["params"], saved[6][1])
        old = m.restore(4)
        assert_bit_identical(old["buffer"], saved[4][0]) and old.items == {}
        as_saved = m.restore(4, params=None).items["params"]
        for k in params:
            np.testing.assert_array_equal(as_saved[k], saved[4][1][k])
        with pytest.raises(ckpt.CheckpointNotFoundError, match=r"no item\(s\) \['opt'\]"):
            m.restore(6, opt=None)
        with pytest.raises(ValueError, match="reserved"):
            m.save(8, buffer_meta={"x": jnp.ones(1)})
    assert_bit_identical(ckpt.restore(tmp_path / "run", step=4), saved[4][0])


def test_raw_orbax_recipe_with_two_buffers(tmp_path):
    import orbax.checkpoint as ocp

    a, _ = fill(CORE["replay"](), 9)
    b = WithFn(x=jnp.arange(5.0))
    params = {"w": jnp.ones(3)}
    with ocp.CheckpointManager(tmp_path / "raw") as mngr:
        mngr.save(
            7,
            args=ocp.args.Composite(
                params=ocp.args.StandardSave(params),
                **ckpt.save_args(a, name="online"),
                **ckpt.save_args(b, name="offline"),
            ),
        )
        mngr.wait_until_finished()
        assert_bit_identical(ckpt.restore_buffer(mngr, 7, name="online"), a)
        assert_bit_identical(ckpt.restore_buffer(mngr, 7, like=b, name="offline"), b)
        with pytest.raises(ckpt.CheckpointNotFoundError, match="no buffer item 'buffer'"):
            ckpt.restore_buffer(mngr, 7)


# ---------------------------------------------------------------- errors
@pytest.fixture(scope="module")
def saved_dir(tmp_path_factory):
    """A committed checkpoint of a small ReplayBuffer (obs float32[3]) at generation 1."""
    path = tmp_path_factory.mktemp("saved") / "c"
    buf, _ = fill(jaxbuf.ReplayBuffer.create(EXAMPLE, 6), 9)
    ckpt.save(path, buf)
    return path, buf


def _like(example=EXAMPLE, size=6, cls=jaxbuf.ReplayBuffer, **kw):
    if cls is jaxbuf.VectorReplayBuffer:
        return jax.eval_shape(lambda: cls.create(example, size, 2, **kw))
    return jax.eval_shape(lambda: cls.create(example, size, **kw))


def test_mismatch_shape_names_field(saved_dir):
    path, _ = saved_dir
    like = _like({**EXAMPLE, "obs": np.zeros(4, np.float32)})
    with pytest.raises(ckpt.CheckpointMismatchError) as err:
        ckpt.restore(path, like=like)
    msg = str(err.value)
    assert (
        "storage.obs: like expects shape (6, 1, 4) dtype float32, checkpoint has shape (6, 1, 3)"
        in msg
    )
    assert str(path) in msg and "1 difference" in msg


def test_mismatch_structure_dtype_and_config(saved_dir):
    path, _ = saved_dir
    example = {k: v for k, v in EXAMPLE.items() if k != "extra"}
    example.update(act=np.int8(0), info={"x": np.int32(0)}, cost=np.float32(0))
    with pytest.raises(ckpt.CheckpointMismatchError) as err:
        ckpt.restore(path, like=_like(example, 8, stack_num=2))
    msg = str(err.value)
    assert "stack_num (static): like expects 2, checkpoint has 1" in msg
    assert "subbuffer_size (static): like expects 8, checkpoint has 6" in msg
    assert "storage: like expects fields" in msg
    assert "(checkpoint lacks ['cost']; checkpoint has extra ['extra'])" in msg
    assert (
        "storage.info: like expects fields ['x'], checkpoint has ['x', 'y'] (checkpoint has "
        "extra ['y'])" in msg
    )
    assert (
        "storage.act: like expects shape (8, 1) dtype int8, checkpoint has shape (6, 1) dtype "
        "int32" in msg
    )


def test_mismatch_layout(saved_dir):
    """A one-sub-buffer checkpoint does not restore into a vector buffer of the same size."""
    path, _ = saved_dir
    with pytest.raises(
        ckpt.CheckpointMismatchError,
        match=r"buffer_num \(static\): like expects 2, checkpoint has 1",
    ):
        ckpt.restore(path, like=_like(size=12, cls=jaxbuf.VectorReplayBuffer))


def test_mismatch_class(saved_dir):
    path, _ = saved_dir
    like = jaxbuf.PrioritizedReplayBuffer.create(EXAMPLE, 6, alpha=0.6, beta=0.4)
    with pytest.raises(
        ckpt.CheckpointMismatchError,
        match=r"<root>: like expects jaxbuf.prioritized.buffer:PrioritizedReplayBuffer, "
        r"checkpoint has jaxbuf.buffers:ReplayBuffer",
    ):
        ckpt.restore(path, like=like)


def _copy(saved_dir, tmp_path):
    import shutil

    path, buf = saved_dir
    dst = tmp_path / "c"
    shutil.copytree(path, dst)
    return dst, buf


def _edit_meta(path, fn):
    meta_file = path / "1" / "buffer_meta" / "metadata"
    text = json.dumps(fn(json.loads(meta_file.read_text()))) if callable(fn) else fn
    meta_file.write_text(text)
    return meta_file


def test_saved_fields_that_the_class_lacks_are_named(saved_dir, tmp_path):
    """A checkpoint of another field layout (e.g. written by another jaxbuf) restored without
    ``like`` fails with the class, both field lists and the writing version."""
    path, _ = _copy(saved_dir, tmp_path)

    def rename(meta):
        children = meta["tree"]["children"]
        children["insertion_idx"] = children.pop("counters")
        return meta

    _edit_meta(path, rename)
    with pytest.raises(
        ckpt.CheckpointMismatchError,
        match=r"'<root>' was saved as jaxbuf.buffers:ReplayBuffer with fields .*'insertion_idx'.*"
        r"but this jaxbuf's class has .*'counters'.*written by jaxbuf 0.2.0",
    ):
        ckpt.restore(path)


def test_static_option_added_later_restores_to_its_default(saved_dir, tmp_path):
    """A checkpoint written before a static option existed (``lockstep``) restores without
    ``like``, with the option's default."""
    path, buf = _copy(saved_dir, tmp_path)

    def drop(meta):
        assert meta["tree"]["static"].pop("lockstep") is False
        return meta

    _edit_meta(path, drop)
    restored = ckpt.restore(path)
    assert restored.lockstep is False
    assert_bit_identical(restored, buf)


def test_schema_version_newer(saved_dir, tmp_path):
    path, _ = _copy(saved_dir, tmp_path)
    _edit_meta(path, lambda m: {**m, "schema_version": 99, "jaxbuf_version": "9.0"})
    with pytest.raises(
        ckpt.SchemaVersionError,
        match=r"schema version 99 \(written by jaxbuf 9.0\); this jaxbuf reads "
        r"schema version 2; upgrade",
    ):
        ckpt.restore(path)


def test_schema_version_1_is_refused(saved_dir, tmp_path):
    path, _ = _copy(saved_dir, tmp_path)
    _edit_meta(path, lambda m: {**m, "schema_version": 1, "jaxbuf_version": "0.1.0"})
    with pytest.raises(
        ckpt.SchemaVersionError, match=r"schema version 1 \(written by jaxbuf 0.1.0"
    ):
        ckpt.restore(path)


def test_corrupt_metadata(saved_dir, tmp_path):
    path, _ = _copy(saved_dir, tmp_path)
    meta_file = _edit_meta(path, "{not json")
    with pytest.raises(ckpt.CheckpointCorruptError, match=str(meta_file.parent)):
        ckpt.restore(path)
    _edit_meta(path, json.dumps({"format": "something else"}))
    with pytest.raises(ckpt.CheckpointCorruptError, match="not a jaxbuf buffer description"):
        ckpt.restore(path)


def test_corrupt_arrays(tmp_path):
    # One leaf, so no other read is still pending in orbax when the damaged one fails.
    ckpt.save(tmp_path / "c", WithFn(x=jnp.arange(1000.0)))
    for f in (tmp_path / "c" / "1" / "buffer").rglob("*"):
        if f.is_file() and f.parent.name == "d":
            f.write_bytes(b"garbage")
    with pytest.raises(
        ckpt.CheckpointCorruptError,
        match=r"buffer arrays at .*/c/1/buffer are corrupt or unreadable",
    ):
        ckpt.restore(tmp_path / "c")


def test_missing(tmp_path, saved_dir):
    with pytest.raises(ckpt.CheckpointNotFoundError, match=r"no checkpoint at .*nowhere"):
        ckpt.restore(tmp_path / "nowhere")
    (tmp_path / "empty" / "3.orbax-checkpoint-tmp-12").mkdir(parents=True)
    with pytest.raises(
        ckpt.CheckpointNotFoundError,
        match=r"no committed checkpoint in .*empty \(unfinished.*3.orbax",
    ):
        ckpt.restore(tmp_path / "empty")
    path, _ = saved_dir
    with pytest.raises(ckpt.CheckpointNotFoundError, match=r"no committed step 5 .* \[1\]"):
        ckpt.restore(path, step=5)
    with ckpt.checkpoint_manager(tmp_path / "params_only") as mngr:
        mngr.save(3, params={"w": jnp.ones(2)}, wait=True)
    with pytest.raises(
        ckpt.CheckpointNotFoundError,
        match=r"step 3 in .*params_only holds no buffer \(items \['params'\]\)",
    ):
        ckpt.restore(tmp_path / "params_only")


# ------------------------------------------------------ restored config vs arrays
def test_static_config_that_does_not_fit_the_arrays_is_refused(saved_dir, tmp_path):
    """An edited description (subbuffer_size 3 over 6-slot arrays) must not restore."""
    path, _ = _copy(saved_dir, tmp_path)

    def shrink(meta):
        assert meta["tree"]["static"]["subbuffer_size"] == 6
        meta["tree"]["static"]["subbuffer_size"] = 3
        return meta

    _edit_meta(path, shrink)
    with pytest.raises(
        ckpt.CheckpointCorruptError,
        match=r"checkpoint at .*/c/1 is inconsistent: storage\['\w+'\]: leading dimensions "
        r"\(6, 1\) but subbuffer_size=3 and buffer_num=1 require \(3, 1\)",
    ):
        ckpt.restore(path)
    _edit_meta(
        path,
        lambda m: {
            **m,
            "tree": {
                **m["tree"],
                "static": {**m["tree"]["static"], "subbuffer_size": 6, "buffer_num": 0},
            },
        },
    )
    with pytest.raises(ckpt.CheckpointCorruptError, match=r"buffer_num: expected a positive"):
        ckpt.restore(path)


@pytest.mark.parametrize(
    "column, value, name",
    [
        (0, 6, "insertion_idx"),
        (1, 7, "lengths"),
        (2, -1, "last_slot"),
        (3, -2, "ep_len"),
        (4, 6, "ep_start"),
    ],
)
def test_counters_outside_their_ranges_are_refused(tmp_path, column, value, name):
    buf, _ = fill(jaxbuf.ReplayBuffer.create(EXAMPLE, 6), 4)
    bad = buf.replace(counters=buf.counters.at[0, column].set(value))
    ckpt.save(tmp_path / "c", bad)
    with pytest.raises(
        ckpt.CheckpointCorruptError,
        match=rf"inconsistent: counters\[\.\.\., {column}\] \({name}\): sub-buffer 0 holds {value}",
    ):
        ckpt.restore(tmp_path / "c")
    with pytest.raises(ckpt.CheckpointCorruptError, match=rf"\({name}\)"):
        ckpt.restore(tmp_path / "c", like=jax.eval_shape(lambda: buf))
    ckpt.save(tmp_path / "c", buf)  # the same buffer with valid counters restores
    assert_bit_identical(ckpt.restore(tmp_path / "c"), buf)


def test_counters_of_nested_buffers_are_checked(tmp_path):
    """The check walks the pytree: a core buffer inside a prioritized one is checked too."""
    pbuf, _ = fill(jaxbuf.PrioritizedReplayBuffer.create(EXAMPLE, 6, alpha=0.6, beta=0.4), 3)
    inner = pbuf.buffer.replace(counters=pbuf.buffer.counters.at[0, 1].set(9))
    ckpt.save(tmp_path / "p", pbuf.replace(buffer=inner))
    with pytest.raises(
        ckpt.CheckpointCorruptError, match=r"buffer\.counters\[\.\.\., 1\] \(lengths\)"
    ):
        ckpt.restore(tmp_path / "p")


def test_damaged_tianshou_hdf5_structure_names_the_file(tmp_path):
    import os
    import shutil

    h5py = pytest.importorskip("h5py")
    path = tmp_path / "damaged.h5"
    shutil.copy(os.path.join(os.path.dirname(__file__), "data", "tianshou_rb.h5"), path)
    with h5py.File(path, "r+") as f:
        del f["options"].attrs["stack_num"]  # a damaged or hand-edited file
    with pytest.raises(
        ckpt.CheckpointCorruptError, match=r"damaged.h5 is a damaged HDF5 file: KeyError"
    ):
        ckpt.from_tianshou_hdf5(path)
