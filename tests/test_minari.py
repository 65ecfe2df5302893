"""Minari datasets in and out: ``from_minari`` / ``to_minari`` (``jaxbuf.datasets``).

Datasets are made locally with Minari's own DataCollector over Gymnasium's CartPole-v1,
under a temporary ``MINARI_DATASETS_PATH`` (no network).
"""

from __future__ import annotations

import sys
import warnings

import gymnasium as gym
import jax
import jax.numpy as jnp
import minari
import numpy as np
import pytest

import jaxbuf
from jaxbuf.datasets import buffer_episodes, from_minari, minari_transitions, to_minari


@pytest.fixture(autouse=True)
def minari_home(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Minari asks for author, description...
        yield tmp_path / "datasets"


def collect(dataset_id: str, episodes: int = 5, max_steps: int = 12) -> minari.MinariDataset:
    """Random CartPole episodes; ``max_steps`` is short enough that some are truncated."""
    env = minari.DataCollector(gym.make("CartPole-v1", max_episode_steps=max_steps))
    env.action_space.seed(0)
    for seed in range(episodes):
        env.reset(seed=seed)
        while True:
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            if terminated or truncated:
                break
    dataset = env.create_dataset(dataset_id, algorithm_name="random")
    env.close()
    return dataset


def everything(buf) -> dict:
    return jax.device_get(buf.read(jnp.arange(buf.maxsize)))


def assert_same(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        jax.tree.map(
            lambda x, y, k=key: np.testing.assert_array_equal(x, y, err_msg=k), a[key], b[key]
        )


def test_collected_dataset_keeps_steps_and_episode_boundaries(minari_home):
    dataset = collect("test/cartpole/random-v0")
    buf = from_minari(dataset)
    assert buf.maxsize == int(buf.size) == dataset.total_steps
    stored = everything(buf)
    assert stored["act"].dtype == np.int32 and stored["rew"].dtype == np.float32
    start = 0
    kinds = set()
    for episode in dataset.iterate_episodes():
        t = len(episode)
        rows = jax.tree.map(lambda x, s=start, t=t: x[s : s + t], stored)
        np.testing.assert_array_equal(rows["obs"], episode.observations[:-1])
        np.testing.assert_array_equal(rows["obs_next"], episode.observations[1:])
        np.testing.assert_array_equal(rows["act"], episode.actions)
        np.testing.assert_array_equal(rows["rew"], episode.rewards)
        np.testing.assert_array_equal(rows["terminated"], episode.terminations)
        np.testing.assert_array_equal(rows["truncated"], episode.truncations)
        # the buffer sees the same episode: its last step ends it, no earlier one does
        done = rows["terminated"] | rows["truncated"]
        assert done[-1] and not done[:-1].any()
        assert int(buf.prev(start)) == start and int(buf.next(start + t - 1)) == start + t - 1
        kinds.add("terminated" if rows["terminated"][-1] else "truncated")
        start += t
    assert kinds == {"terminated", "truncated"}  # both endings are exercised
    # the same data by local id and by folder
    assert_same(everything(from_minari("test/cartpole/random-v0")), stored)
    assert_same(everything(from_minari(minari_home / "test/cartpole/random-v0")), stored)


def test_create_options_pass_through_and_size_overrides():
    dataset = collect("test/cartpole/opts-v0", episodes=4)
    n = dataset.total_steps
    per = from_minari(dataset, buffer_cls=jaxbuf.PrioritizedReplayBuffer, alpha=0.6, beta=0.4)
    assert isinstance(per, jaxbuf.PrioritizedReplayBuffer) and int(per.size) == n
    batch, _ = per.sample(jax.random.key(0), 8)
    np.testing.assert_allclose(batch["weight"], 1.0)  # all rows at the same (max) priority
    vec = from_minari(dataset, buffer_cls=jaxbuf.VectorReplayBuffer, buffer_num=2, size=2 * n)
    assert vec.buffer_num == 2 and int(vec.size) == n
    small = from_minari(dataset, size=5)  # wraps: the newest 5 steps stay
    np.testing.assert_array_equal(
        small[:]["obs_next"], minari_transitions(dataset)["obs_next"][-5:]
    )


def cartpole_buffer(buffer_num: int, steps: int, seed: int = 0, cost: bool = False):
    """A jaxbuf buffer filled by stepping Gymnasium CartPole envs (episodes of <= 10 steps)."""
    envs = [gym.make("CartPole-v1", max_episode_steps=10) for _ in range(buffer_num)]
    rng = np.random.default_rng(seed)
    example = {
        "obs": np.zeros(4, np.float32),
        "act": np.int32(0),
        "rew": np.float32(0),
        "terminated": False,
        "truncated": False,
        "obs_next": np.zeros(4, np.float32),
    }
    if cost:
        example["cost"] = np.zeros(2, np.float32)
    cls = jaxbuf.ReplayBuffer if buffer_num == 1 else jaxbuf.VectorReplayBuffer
    buf = cls.create(example, 64 * buffer_num, *([buffer_num] if buffer_num > 1 else []))
    obs = [env.reset(seed=seed + i)[0] for i, env in enumerate(envs)]
    for _ in range(steps):
        rows = []
        for i, env in enumerate(envs):
            act = int(rng.integers(2))
            nxt, rew, term, trunc, _ = env.step(act)
            row = {
                "obs": obs[i],
                "act": np.int32(act),
                "rew": np.float32(rew),
                "terminated": term,
                "truncated": trunc,
                "obs_next": nxt,
            }
            if cost:
                row["cost"] = rng.normal(size=2).astype(np.float32)
            rows.append(row)
            obs[i] = env.reset()[0] if term or trunc else nxt
        batch = jax.tree.map(lambda *xs: np.stack(xs), *rows)
        buf = buf.add(batch, None if buffer_num > 1 else np.zeros(buffer_num, np.int32))[0]
    return buf


def test_buffer_to_minari_to_buffer_is_exact():
    buf = cartpole_buffer(1, 40, cost=True)
    # keep only finished episodes, so that nothing is dropped on export
    last_end = int(np.flatnonzero(np.asarray(buf[:]["done"]))[-1])
    finished = jaxbuf.ReplayBuffer.create(jax.tree.map(lambda x: x[0], buf[:1]), last_end + 1)
    rows = {k: v[: last_end + 1] for k, v in buf[:].items() if k != "done"}
    finished = finished.extend(rows)[0]
    dataset = to_minari(finished, "test/cartpole/export-v0", env="CartPole-v1")
    assert dataset.total_steps == last_end + 1
    assert dataset.action_space == gym.spaces.Discrete(2)
    assert next(dataset.iterate_episodes()).actions.dtype == np.int64  # the space's dtype
    back = from_minari(dataset, infos=("cost",))
    assert_same(everything(back), everything(finished))
    assert_same(
        everything(from_minari("test/cartpole/export-v0", infos=["cost"])), everything(back)
    )


@pytest.mark.parametrize("unfinished", ["drop", "truncate"])
def test_vector_buffer_exports_episodes_and_the_unfinished_tail(unfinished):
    buf = cartpole_buffer(2, 25, seed=3)
    heads = np.asarray(buf.unfinished_index())
    assert (heads >= 0).all()  # both sub-buffers end mid-episode
    dataset = to_minari(buf, f"test/cartpole/vec-{unfinished}-v0", unfinished=unfinished)
    episodes = buffer_episodes(buf, unfinished)
    assert dataset.total_episodes == len(episodes)
    idx = buf.chronological_indices()
    stored = jax.device_get(buf.read(jnp.asarray(idx)))
    open_rows = np.zeros(idx.size, bool)
    for sub in range(2):
        in_sub = (idx >= buf.subbuffer_edges[sub]) & (idx < buf.subbuffer_edges[sub + 1])
        last_done = np.flatnonzero(in_sub & (stored["terminated"] | stored["truncated"]))[-1]
        open_rows |= in_sub & (np.arange(idx.size) > last_done)
    keep = ~open_rows if unfinished == "drop" else np.ones(idx.size, bool)
    assert dataset.total_steps == keep.sum()
    back = minari_transitions(dataset)
    expected = {k: v[keep] for k, v in stored.items()}
    if unfinished == "truncate":  # each tail's last step ends truncated
        expected["truncated"] = expected["truncated"] | np.isin(idx, heads)
    assert_same(back, expected)
    assert (np.diff(np.flatnonzero(expected["truncated"] | expected["terminated"])) > 0).all()


def nested_episode(eid: int, t: int, tag=None) -> dict:
    obs = {
        "pos": np.arange(2 * (t + 1), dtype=np.float32).reshape(t + 1, 2),
        "tag": {"id": np.arange(t + 1, dtype=np.int32)} if tag is None else tag,
    }
    return {
        "id": eid,
        "observations": obs,
        "actions": np.ones((t, 1), np.float32),
        "rewards": np.arange(t, dtype=np.float64),
        "terminations": np.eye(t)[-1] > 0,
        "truncations": np.zeros(t, bool),
    }


def test_dict_observations_become_nested_fields():
    buf = from_minari([nested_episode(0, 3), nested_episode(1, 2)])
    spec = buf.input_spec()
    assert spec["obs"]["pos"].shape == (2,) and spec["obs"]["tag"]["id"].dtype == np.int32
    stored = everything(buf)
    np.testing.assert_array_equal(stored["obs_next"]["pos"][:3], [[2, 3], [4, 5], [6, 7]])
    np.testing.assert_array_equal(stored["obs"]["tag"]["id"], [0, 1, 2, 0, 1])
    dataset = to_minari(buf, "test/nested-v0")  # spaces inferred: Dict of Box
    assert isinstance(dataset.observation_space, gym.spaces.Dict)
    assert isinstance(dataset.observation_space["tag"], gym.spaces.Dict)
    assert_same(everything(from_minari(dataset)), stored)


def test_tuple_observations_are_refused_naming_the_field():
    tag = (np.arange(4, dtype=np.int32),)
    with pytest.raises(
        jaxbuf.InputError, match=r"episode 5: field 'observations\['tag'\]' is a tuple"
    ):
        from_minari([nested_episode(5, 3, tag=tag)])


def test_an_episode_cut_without_flags_ends_truncated():
    ep = {
        "observations": np.zeros((4, 1)),
        "actions": np.zeros(3, np.int64),
        "rewards": np.ones(3),
        "terminations": np.zeros(3, bool),
        "truncations": np.zeros(3, bool),
    }
    rows = minari_transitions([ep, ep])
    np.testing.assert_array_equal(rows["truncated"], [0, 0, 1, 0, 0, 1])
    assert rows["obs"].dtype == np.float32 and rows["act"].dtype == np.int32


def good(eid=7, t=3) -> dict:
    return {
        "id": eid,
        "observations": np.zeros((t + 1, 2), np.float32),
        "actions": np.zeros(t, np.int64),
        "rewards": np.ones(t),
        "terminations": np.eye(t)[-1] > 0,
        "truncations": np.zeros(t, bool),
    }


def broken(**change) -> dict:
    ep = good()
    for key, value in change.items():
        if value is None:
            del ep[key]
        else:
            ep[key] = value
    return ep


@pytest.mark.parametrize(
    ("episodes", "pattern"),
    [
        (
            [broken(observations=np.zeros((3, 2)))],
            r"episode 7: field 'observations' has 3 entries, expected 4",
        ),
        ([broken(actions=np.zeros(2))], r"episode 7: field 'actions' has 2 entries, expected 3"),
        ([broken(truncations=np.zeros(4, bool))], r"episode 7: field 'truncations' has 4 entries"),
        ([broken(actions=np.array(["a", "b", "c"]))], r"episode 7: field 'actions' has dtype <U1"),
        ([broken(rewards=None)], r"episode 7: missing field\(s\) \['rewards'\]"),
        (
            [broken(terminations=np.array([0, 2, 1]))],
            r"episode 7: field 'terminations' must hold 0/1",
        ),
        (
            [broken(rewards=np.array([1.0, np.nan, 1.0]))],
            r"episode 7: field 'rewards' is not finite",
        ),
        ([good(3), broken(observations=np.zeros((4, 3)))], r"episode 7: field 'obs' .* episode 3"),
        ([], r"holds no episode"),
    ],
)
def test_bad_episodes_name_the_field_and_the_episode(episodes, pattern):
    with pytest.raises(jaxbuf.InputError, match=pattern):
        from_minari(episodes)


def test_unknown_dataset_and_bad_exports_are_clear_errors():
    with pytest.raises(jaxbuf.InputError, match="no local Minari dataset 'nope/none-v0'"):
        from_minari("nope/none-v0")
    with pytest.raises(jaxbuf.InputError, match="dataset must be a MinariDataset"):
        from_minari(42)
    broken_chain = from_minari([good(0)])
    rows = jax.device_get(broken_chain.read(jnp.arange(3)))
    rows["obs_next"] = rows["obs_next"] + np.array([[0, 0], [1, 0], [0, 0]], np.float32)
    chained = jaxbuf.ReplayBuffer.create(jax.tree.map(lambda x: x[0], rows), 3).extend(rows)[0]
    with pytest.raises(jaxbuf.InputError, match=r"episode 0: field 'obs_next' at step 1 differs"):
        to_minari(chained, "test/broken-v0")
    empty = jaxbuf.ReplayBuffer.create(jax.tree.map(lambda x: x[0], rows), 3)
    with pytest.raises(jaxbuf.InputError, match="no finished episode"):
        to_minari(empty, "test/empty-v0")
    with pytest.raises(jaxbuf.InputError, match="unfinished must be"):
        to_minari(chained, "test/x-v0", unfinished="keep")


def test_without_minari_the_error_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "minari", None)  # `import minari` now raises ImportError
    with pytest.raises(
        jaxbuf.errors.MissingDependencyError, match=r"pip install 'jaxbuf\[minari\]'"
    ):
        from_minari("test/cartpole/random-v0")
    buf = from_minari([good()])  # plain episode dicts need no minari
    assert int(buf.size) == 3
    with pytest.raises(ImportError, match=r"to_minari: .*pip install 'jaxbuf\[minari\]'"):
        to_minari(buf, "test/x-v0")
