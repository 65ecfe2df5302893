"""Tests for ``PrioritizedReplayBuffer`` / ``PrioritizedVectorReplayBuffer``.

The oracle replay compares every recorded Tianshou output except the documented fixes
(docs/prioritized.md): the importance weights (E18, E21), Tianshou's raw running minimum
(E18) and the RNG-dependent draws (E20), each skipped with a comment at the comparison.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import oracle
import pytest
from helpers import transition

import jaxbuf
from jaxbuf.prioritized import PrioritizedReplayBuffer, PrioritizedVectorReplayBuffer

EXAMPLE = transition((2,), obs_next=True)


def step(i: float, done: bool = False) -> dict:
    """One transition without a batch axis, tagged by ``obs[0] == i``."""
    return {
        "obs": np.array([i, 0], np.float32),
        "act": np.int32(i),
        "rew": np.float32(1),
        "terminated": done,
        "truncated": False,
        "obs_next": np.array([i + 1, 0], np.float32),
    }


def rows(ids: list[float], done: list[bool] | None = None) -> dict:
    """A batch with a leading axis, one row per entry of ``ids``."""
    done = done or [False] * len(ids)
    return jax.tree.map(lambda *x: np.stack(x), *[step(i, d) for i, d in zip(ids, done)])


def filled(n: int, size: int = 8, **kw) -> PrioritizedReplayBuffer:
    kw = {"alpha": 0.6, "beta": 0.4} | kw
    buf = PrioritizedReplayBuffer.create(EXAMPLE, size, **kw)
    for i in range(n):
        buf, _ = buf.add(step(i, done=i % 3 == 2))
    return buf


def standard_weight(leaves, stored, index, beta):
    """Schaul et al. (2016): (N P(i))^-beta / max_j (N P(j))^-beta = (l_i / l_min)^-beta,
    with l = p^alpha and l_min the smallest stored leaf; 0 for an unstored slot."""
    leaves = np.asarray(leaves, np.float64)
    l_min = leaves[np.asarray(stored)].min()
    leaf = leaves[np.asarray(index)]
    return np.where(leaf > 0, (np.maximum(leaf, 1e-300) / l_min) ** -beta, 0.0)


# ---------------------------------------------------------------- oracle replay

SCENARIOS = oracle.scenarios("PrioritizedReplayBuffer", "PrioritizedVectorReplayBuffer")


def _close(actual, expected, what, rtol=1e-6):
    np.testing.assert_allclose(
        np.asarray(actual, np.float64),
        np.asarray(expected, np.float64),
        rtol=rtol,
        atol=1e-7,
        err_msg=what,
    )


def _tianshou_weight(out, index):
    """Tianshou's recorded weight formula (E18): ``(leaf / min_prio) ** -beta`` with its raw
    running minimum ``min_prio`` (not ``min_prio ** alpha``) and the beta it applied."""
    leaves = np.asarray(out["tree_leaves"], np.float64)
    return (leaves[np.asarray(index)] / out["min_prio"]) ** -out["beta"]


def _read_weight(w, weight_norm):
    return w / w.max() if weight_norm else w


@pytest.mark.parametrize(("scn", "jit"), oracle.replay_params(SCENARIOS))
def test_oracle_prioritized_scenario(scn, jit):
    buf = oracle.build(scn)
    vector = scn["buffer"]["type"] == "PrioritizedVectorReplayBuffer"
    norm = scn["buffer"]["args"].get("weight_norm", True)
    if jit:
        add_ids = jax.jit(lambda b, x, i: b.add(x, i))
        add_all = jax.jit(lambda b, x: b.add(x))
        update = jax.jit(lambda b, i, w: b.update_weight(i, w))
    else:
        add_ids = lambda b, x, i: b.add(x, i)  # noqa: E731
        add_all = lambda b, x: b.add(x)  # noqa: E731
        update = lambda b, i, w: b.update_weight(i, w)  # noqa: E731
    beta = scn["buffer"]["args"]["beta"]
    seen = dict.fromkeys(("add", "snapshot", "prio_state", "getitem", "sample_indices"), 0)
    leaves = None  # the tree leaves of the last prio_state op
    for n, op in enumerate(scn["ops"]):
        what = f"{scn['id']} op {n} ({op['op']})"
        kind = op["op"]
        if kind == "add":
            batch = oracle.rows_of(op, single=op["call_form"] == "single")
            ids = op["buffer_ids"]
            if ids is None or not vector:
                buf, res = add_all(buf, batch)
            else:
                buf, res = add_ids(buf, batch, np.asarray(ids))
            oracle.check_add(buf.buffer, res, op, what)
            oracle.check_state(buf.buffer, op["state_after"], what)
        elif kind == "snapshot":
            oracle.check_snapshot(buf, buf.buffer, op, what)
        elif kind == "prio_state":
            out = op["output"]
            leaves = out["tree_leaves"]
            index = np.asarray(op["index"])
            _close(buf.priorities(), out["tree_leaves"], what + " leaves")
            _close(buf.tree.total(), out["tree_total"], what + " total")
            _close(buf.max_prio, out["max_prio"], what + " max_prio")
            assert buf.alpha == out["alpha"], what
            _close(buf.beta, beta, what + " beta")
            if not vector:
                assert out["beta"] == beta, what
            # E19: Tianshou's vector buffer ignores set_beta, so out["beta"] can be the old
            # beta there; jaxbuf applies the beta that was set.
            # E18: Tianshou divides by its raw running minimum (p_min, not p_min**alpha, and
            # never increased); the recorded weights are exactly that formula ...
            _close(_tianshou_weight(out, index), out["get_weight"], what + " E18", rtol=1e-9)
            # ... while jaxbuf applies the standard formula to the same recorded leaves.
            stored = np.asarray(buf.valid_mask())
            expected = standard_weight(out["tree_leaves"], stored, index, beta)
            _close(buf.get_weight(index), expected, what + " get_weight", rtol=2e-6)
            got = buf[index]["weight"]
            _close(got, _read_weight(expected, norm), what + " weight", rtol=2e-6)
        elif kind == "update_weight":
            buf = update(buf, np.asarray(op["index"]), np.asarray(op["new_weight"]))
        elif kind == "prefix_sum_query":
            got = buf.tree.find_prefix_sum(jnp.asarray(op["values"], jnp.float32))
            oracle.check_prefix_sum(got, op, leaves, what)
        elif kind == "getitem":
            index = np.asarray(op["index"])
            got = buf[index]
            for key, expected in op["output"].items():
                if key == "weight":
                    # E18: standard weights (normalised over this read with weight_norm)
                    stored = np.asarray(buf.valid_mask())
                    w = standard_weight(buf.priorities(), stored, index, beta)
                    _close(got["weight"], _read_weight(w, norm), what + " weight", rtol=2e-6)
                else:
                    _close(got[key], expected, what + " " + key)
        elif kind == "get":
            oracle.check_get(buf, op, what)
        elif kind == "set_beta":
            beta = op["beta"]
            buf = buf.set_beta(beta)
        elif kind == "sample_indices":
            expected = np.asarray(op["output"])
            if op["batch_size"] == 0:
                np.testing.assert_array_equal(buf.chronological_indices(), expected)
            else:
                # E20: Tianshou draws from NumPy's global RNG (batch_size None: uniform);
                # jaxbuf draws with a JAX key, so only the support is compared: slots that
                # hold a transition with positive priority.
                got = buf.sample_indices(jax.random.key(n), 64)
                support = set(np.flatnonzero(np.asarray(buf.priorities()) > 0).tolist())
                assert support == set(buf.chronological_indices().tolist()), what
                oracle.check_sample_support(got, expected, support, what)
        elif kind in ("gae", "nstep"):
            continue  # returns are replayed by the returns tests
        else:
            raise AssertionError(f"unhandled op {kind}")
        if kind in seen:
            seen[kind] += 1
    assert all(seen.values()), seen


# ---------------------------------------------------------------- semantics


def test_new_slots_get_float_max_priority():
    buf = filled(3, alpha=1.0)
    buf = buf.update_weight(np.array([1]), np.array([3.7]))
    buf, res = buf.add(step(9))
    # the true float maximum (flashbax 0.1.3 truncated it to 3.0)
    np.testing.assert_allclose(buf.priorities()[int(res.index[0])], 3.7 + 2**-23, rtol=1e-7)
    np.testing.assert_allclose(buf.max_prio, 3.7, rtol=1e-6)


def test_edge_case_e18_standard_weights_and_duplicates():
    buf = filled(4, size=6, alpha=0.5, beta=0.4)
    buf = buf.update_weight(np.array([0, 1]), np.array([4.0, -0.25]))
    np.testing.assert_allclose(buf.priorities()[:4], [2.0, 0.5, 1.0, 1.0], rtol=1e-6)
    # Tianshou gives [0.435 0.758 0.574 0.574] (divides by p_min, not p_min**alpha)
    np.testing.assert_allclose(
        buf.get_weight(np.arange(4)), [4**-0.4, 1, 2**-0.4, 2**-0.4], rtol=1e-6
    )
    buf = buf.update_weight(np.array([2, 2]), np.array([9.0, 0.01]))
    np.testing.assert_allclose(buf.priorities()[2], 0.1, rtol=1e-5)  # the last one wins
    np.testing.assert_allclose(buf.max_prio, 9.0, rtol=1e-6)  # but max sees every value
    buf, _ = buf.add(step(9))
    np.testing.assert_allclose(buf.priorities()[4], 3.0, rtol=1e-6)


def test_min_priority_follows_overwrites():
    buf = filled(4, size=4, alpha=1.0, beta=1.0)
    buf = buf.update_weight(np.array([0, 1, 2, 3]), np.array([0.5, 2.0, 4.0, 4.0]))
    np.testing.assert_allclose(buf.get_weight(np.array([0, 1])), [1.0, 0.25], rtol=1e-6)
    # overwrite slot 0 (the smallest priority): the minimum is now slot 1's 2.0, so slot 1
    # gets weight 1. Tianshou's raw running minimum would keep 0.5.
    buf, res = buf.add(step(7))
    assert int(res.index[0]) == 0
    np.testing.assert_allclose(buf.get_weight(np.array([1, 2, 0])), [1.0, 0.5, 0.5], rtol=1e-6)


def test_edge_case_e21_unwritten_slots_never_sampled_nor_inf():
    buf = filled(2, size=4)
    w = np.asarray(buf.get_weight(np.arange(4)))
    np.testing.assert_allclose(w, [1, 1, 0, 0])  # Tianshou: [1 1 inf inf]
    np.testing.assert_allclose(buf[np.arange(4)]["weight"], [1, 1, 0, 0])  # Tianshou: NaN
    np.testing.assert_allclose(buf[[0, 1]]["weight"], [1, 1])  # a list index works
    drawn = np.asarray(buf.sample_indices(jax.random.key(0), 1000))
    assert set(drawn.tolist()) <= {0, 1}
    empty = PrioritizedReplayBuffer.create(EXAMPLE, 4, 0.6, 0.4)
    batch, idx = empty.sample(jax.random.key(0), 3)
    np.testing.assert_array_equal(idx, [0, 0, 0])
    np.testing.assert_array_equal(batch["weight"], [0, 0, 0])
    assert np.isfinite(np.asarray(empty.get_weight(np.arange(4)))).all()


def test_edge_case_e22_weight_norm_per_read_and_off():
    buf = filled(3, size=4, alpha=1.0, beta=1.0)
    buf = buf.update_weight(np.array([0, 1, 2]), np.array([1.0, 2.0, 4.0]))
    np.testing.assert_allclose(buf[np.array([0, 1, 2])]["weight"], [1, 0.5, 0.25], rtol=1e-6)
    np.testing.assert_allclose(buf[np.array([1, 2])]["weight"], [1, 0.5], rtol=1e-6)
    np.testing.assert_array_equal(buf[np.array([2])]["weight"], [1.0])
    assert float(buf[2]["weight"]) == 1.0
    off = buf.replace(weight_norm=False)
    np.testing.assert_allclose(off[np.array([1, 2])]["weight"], [0.5, 0.25], rtol=1e-6)
    sliced = buf[1:3]  # slices follow the chronological order, as in the core
    np.testing.assert_array_equal(sliced["act"], [1, 2])
    np.testing.assert_allclose(sliced["weight"], [1, 0.5], rtol=1e-6)


def test_weights_match_formula_for_sampled_batches():
    buf = filled(6, size=8, alpha=0.7, beta=0.5, weight_norm=False)
    buf = buf.update_weight(np.arange(6), np.array([0.1, 3.0, -1.0, 0.0, 7.5, 2.0]))
    batch, idx = buf.sample(jax.random.key(3), 32)
    p = np.abs(np.array([0.1, 3.0, -1.0, 0.0, 7.5, 2.0], np.float64)) + 2**-23
    prob = p**0.7 / (p**0.7).sum()
    expected = (6 * prob[idx]) ** -0.5 / ((6 * prob.min()) ** -0.5)
    np.testing.assert_allclose(batch["weight"], expected, rtol=1e-5)
    np.testing.assert_array_equal(batch["act"], np.asarray(idx))


def test_sampling_frequencies_match_priorities():
    buf = filled(8, size=10, alpha=0.8)
    prio = np.array([0.5, 2.0, 0.0, 1.0, 4.0, 0.3, 1.5, 3.0])
    buf = buf.update_weight(np.arange(8), prio)
    n = 100_000
    counts = np.bincount(np.asarray(buf.sample_indices(jax.random.key(1), n)), minlength=10)
    leaf = (np.abs(prio) + 2**-23) ** 0.8
    expected = n * leaf / leaf.sum()
    assert counts[8:].sum() == 0  # unwritten slots
    stat = ((counts[:8] - expected) ** 2 / expected).sum()
    assert stat < 24.321886347856854  # scipy.stats.chi2.ppf(0.999, 7)
    strat = np.asarray(buf.sample_indices(jax.random.key(2), 64, stratified=True))
    assert (np.diff(strat) >= 0).all() and (strat < 8).all()


def test_update_weight_ignores_nothing_valid_and_rejects_bad_input():
    buf = filled(3, size=6)
    with pytest.raises(ValueError, match=r"slot\(s\) \[4\] hold no transition yet"):
        buf.update_weight(np.array([0, 4]), np.array([1.0, 1.0]))
    with pytest.raises(IndexError, match=r"indices must lie in \[0, 6\), got \[6\]"):
        buf.update_weight(np.array([6]), np.array([1.0]))
    with pytest.raises(ValueError, match=r"new_weight must be finite, got \[nan\]"):
        buf.update_weight(np.array([1]), np.array([np.nan]))
    with pytest.raises(TypeError, match="indices must be integers"):
        buf.update_weight(np.array([1.0]), np.array([1.0]))
    with pytest.raises(ValueError, match=r"new_weight of shape \(3,\) does not broadcast"):
        buf.update_weight(np.array([0, 1]), np.array([1.0, 2.0, 3.0]))
    # inside jit the invalid entries are dropped and the valid ones applied
    upd = jax.jit(lambda b, i, w: b.update_weight(i, w))
    new = upd(buf, np.array([0, 4, 9, 1]), np.array([2.0, 5.0, 5.0, np.inf]))
    np.testing.assert_allclose(new.priorities()[:5], [(2 + 2**-23) ** 0.6, 1, 1, 0, 0], rtol=1e-6)
    np.testing.assert_allclose(new.max_prio, 2.0, rtol=1e-6)
    # and jaxbuf.checked turns them into errors
    with pytest.raises(Exception, match="holds no transition"):
        jaxbuf.checked(lambda b, i, w: b.update_weight(i, w))(buf, np.array([4]), np.array([1.0]))


def test_set_beta_and_annealing_under_jit():
    buf = filled(5, size=8, alpha=1.0, beta=0.0, weight_norm=False)
    buf = buf.update_weight(np.arange(5), np.array([1.0, 2.0, 4.0, 8.0, 0.5]))
    np.testing.assert_allclose(buf.get_weight(np.arange(5)), np.ones(5), rtol=1e-6)
    np.testing.assert_allclose(buf.set_beta(1.0).get_weight(np.array([0, 4])), [0.5, 1], rtol=1e-6)
    with pytest.raises(ValueError, match="beta must be a finite number >= 0, got -0.5"):
        buf.set_beta(-0.5)

    @jax.jit
    def anneal(buf, key):
        def body(b, t):
            b = b.set_beta(0.4 + 0.6 * t / 9)
            batch, idx = b.sample(jax.random.fold_in(key, t), 16)
            return b, (batch["weight"], idx, b.beta)

        return jax.lax.scan(body, buf, jnp.arange(10))

    out, (w, idx, betas) = anneal(buf, jax.random.key(0))
    np.testing.assert_allclose(betas, 0.4 + 0.6 * np.arange(10) / 9, rtol=1e-6)
    assert float(out.beta) == pytest.approx(1.0)
    leaf = np.array([1.0, 2.0, 4.0, 8.0, 0.5]) + 2**-23
    expected = (leaf[np.asarray(idx)] / leaf.min()) ** -np.asarray(betas)[:, None]
    np.testing.assert_allclose(w, expected, rtol=1e-5)


def test_vector_buffer_global_tree_and_set_beta_e19():
    buf = PrioritizedVectorReplayBuffer.create(EXAMPLE, 8, 2, alpha=0.6, beta=0.5)
    assert buf.maxsize == 8 and buf.tree.capacity == 8
    buf, res = buf.add(rows([0, 1], [False, True]))
    np.testing.assert_array_equal(res.index, [0, 4])
    buf = buf.update_weight(np.array([4]), np.array([2.0]))
    w1 = np.asarray(buf[np.array([0, 4])]["weight"])
    w2 = np.asarray(buf.set_beta(1.0)[np.array([0, 4])]["weight"])
    assert not np.allclose(w1, w2)  # Tianshou's vector set_beta has no effect (E19)
    np.testing.assert_allclose(w2, [1.0, 1.0 / (2 + 2**-23) ** 0.6], rtol=1e-6)
    buf, res = buf.add(rows([5, 6, 7]), np.array([1, 1, 0]))
    np.testing.assert_array_equal(res.index, [5, 6, 1])
    np.testing.assert_allclose(
        buf.priorities(), [1, 1.5157166, 0, 0, 1.5157166, 1.5157166, 1.5157166, 0], rtol=1e-6
    )
    drawn = np.asarray(buf.sample_indices(jax.random.key(0), 2000))
    assert set(drawn.tolist()) == {0, 1, 4, 5, 6}
    np.testing.assert_array_equal(buf.unfinished_index(), [1, 6])
    np.testing.assert_array_equal(buf.chronological_indices(), [0, 1, 4, 5, 6])


def test_vmap_over_buffers():
    one = filled(4, size=8)
    bufs = jax.tree.map(lambda *x: jnp.stack(x), one, one)
    idx = jnp.array([[0, 1], [2, 2]])
    w = jnp.array([[5.0, 0.0], [3.0, 9.0]])

    @jax.jit
    @jax.vmap
    def go(b, i, w, key):
        b = b.update_weight(i, w)
        b, _ = b.add(step(20))
        batch, drawn = b.sample(key, 8)
        return b, batch["weight"], drawn

    out, weights, drawn = go(bufs, idx, w, jax.random.split(jax.random.key(0), 2))
    for k in range(2):
        ref = one.update_weight(np.asarray(idx[k]), np.asarray(w[k])).add(step(20))[0]
        got = jax.tree.map(lambda x, k=k: x[k], out)
        np.testing.assert_allclose(got.priorities(), ref.priorities(), rtol=1e-6)
        np.testing.assert_allclose(got.max_prio, ref.max_prio, rtol=1e-6)
        np.testing.assert_array_equal(got.storage["obs"], ref.storage["obs"])
        assert set(np.asarray(drawn[k]).tolist()) <= set(range(5))
    assert np.isfinite(np.asarray(weights)).all()


def test_forwarded_read_api():
    buf = filled(5, size=8)
    core = buf.buffer
    idx = np.arange(8)
    np.testing.assert_array_equal(buf.prev(idx), core.prev(idx))
    np.testing.assert_array_equal(buf.next(idx), core.next(idx))
    np.testing.assert_array_equal(buf.unfinished_index(), core.unfinished_index())
    np.testing.assert_array_equal(buf.is_episode_end(idx), core.is_episode_end(idx))
    np.testing.assert_array_equal(buf.is_unfinished(idx), core.is_unfinished(idx))
    np.testing.assert_array_equal(buf.all_indices()[0], core.all_indices()[0])
    np.testing.assert_array_equal(buf.get(idx, "obs"), core.get(idx, "obs"))
    np.testing.assert_array_equal(buf.valid_mask(), core.valid_mask())
    assert len(buf) == 5 and int(buf.size) == 5 and buf.maxsize == 8
    assert buf.buffer_num == 1 and buf.subbuffer_size == 8 and buf.stack_num == 1
    np.testing.assert_array_equal(buf.subbuffer_edges, [0, 8])
    assert set(buf.input_spec()) == set(EXAMPLE)
    batch = buf[np.array([1, 2])]
    for key, value in core[np.array([1, 2])].items():
        np.testing.assert_array_equal(batch[key], value)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"alpha": 0.0}, ValueError, "alpha must be a finite number > 0, got 0.0"),
        ({"alpha": "x"}, ValueError, "alpha must be a real number > 0"),
        ({"beta": -1.0}, ValueError, "beta must be a finite number >= 0, got -1.0"),
        ({"weight_norm": 1}, ValueError, "weight_norm must be a bool"),
        ({"stack_num": 2, "sample_avail": True}, ValueError, "sample_avail=True"),
        ({"bogus": 1}, TypeError, r"unexpected option\(s\) \['bogus'\]"),
    ],
)
def test_create_rejects_bad_config(kwargs, error, match):
    kw = {"alpha": 0.6, "beta": 0.4} | kwargs
    with pytest.raises(error, match=match):
        PrioritizedReplayBuffer.create(EXAMPLE, 8, **kw)
    with pytest.raises(error, match=match):
        PrioritizedVectorReplayBuffer.create(EXAMPLE, 8, 2, **kw)


def test_train_step_has_no_capacity_sized_step():
    """sample + update_weight + add of B items: the compiled, donated step holds no operation
    producing an array with a leading dimension of maxsize (the size of the leaf level) other
    than in-place scatters and loop plumbing."""
    n = 2**13  # not 64 * 64: a batch of 64 rows of 64 leaves is read in the update
    buf = PrioritizedReplayBuffer.create(EXAMPLE, n, alpha=0.6, beta=0.4)

    def train_step(buf, key, batch):
        buf, _ = buf.add(batch, jnp.zeros((64,), jnp.int32))
        sample, idx = buf.sample(key, 64)
        return buf.update_weight(idx, sample["rew"] * sample["weight"])

    batch = rows(list(range(64)))
    hlo = (
        jax.jit(train_step, donate_argnums=0)
        .lower(buf, jax.random.key(0), batch)
        .compile()
        .as_text()
    )
    plumbing = {"parameter", "scatter", "fusion", "while", "tuple", "get-tuple-element", "bitcast"}
    found = re.findall(rf"=\s*\(?[a-z0-9]+\[(?:{n}|{2 * n})(?:,\d+)*\]\S*\s+([a-z\-]+)\(", hlo)
    assert [op for op in found if op not in plumbing] == []
    assert "scatter" in found  # the pattern does see the capacity-sized arrays


def test_core_options_pass_through_frame_stacking():
    buf = PrioritizedReplayBuffer.create(EXAMPLE, 6, 0.6, 0.4, stack_num=2, ignore_obs_next=True)
    for i in range(4):
        buf, _ = buf.add({k: v for k, v in step(i, done=i == 1).items() if k != "obs_next"})
    batch = buf[np.array([0, 1, 2, 3])]
    # frames oldest first; slot 2 starts an episode, so its stack repeats its own frame
    np.testing.assert_array_equal(batch["obs"][:, :, 0], [[0, 0], [0, 1], [2, 2], [2, 3]])
    np.testing.assert_array_equal(batch["weight"], [1, 1, 1, 1])
    assert buf.stack_num == 2 and "obs_next" not in buf.storage
