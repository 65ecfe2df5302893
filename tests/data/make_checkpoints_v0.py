"""Write the v0 compatibility checkpoints in tests/data/checkpoints_v0/ (run once, committed).

Each case is a small tree or buffer built deterministically (``build_cases``), saved with
``jaxbuf.save`` into ``checkpoints_v0/<name>/``, and what a restored copy must reproduce is
recorded in ``checkpoints_v0/expected.npz`` as ``<name>/<what>`` arrays (``what`` may be a
path ``read/obs``):

* trees: the leaves, ``total``/``min``, prefix-sum answers for fixed queries and draws for a
  fixed key;
* buffers: ``len``, every valid chronological index (``all_indices``), ``buf[those]``, and for
  the prioritized ones ``get_weight`` of those and the draws for a fixed key.

tests/test_checkpoint_compat.py restores every checkpoint with the current jaxbuf and checks
it against these values. Regenerate only on purpose (it rewrites the fixtures):

    PYTHONPATH=. python tests/data/make_checkpoints_v0.py
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "checkpoints_v0"
QUERIES = np.array([0.0, 0.4, 1.0, 2.5, 7.0, 11.0, 30.0, 1e9], np.float32)
SAMPLE_KEY = 11
SAMPLE_SIZE = 16


def her_reward(achieved, desired):
    """HER reward of the fixture: -1 unless within 0.5 of the desired goal (hashable)."""
    return -(jnp.abs(achieved - desired).sum(-1) > 0.5).astype(jnp.float32)


def example(goal: bool = False) -> dict:
    """One transition: float obs [2] (a goal dict for HER), int act, float rew, flags."""
    if goal:
        obs = {
            "observation": np.zeros(2, np.float32),
            "achieved_goal": np.zeros(1, np.float32),
            "desired_goal": np.zeros(1, np.float32),
        }
    else:
        obs = np.zeros(2, np.float32)
    return {
        "obs": obs,
        "act": np.int32(0),
        "rew": np.float32(0),
        "terminated": False,
        "truncated": False,
        "obs_next": obs,
    }


def rows(step: int, n: int, goal: bool = False) -> dict:
    """``n`` deterministic rows of add call ``step`` (episodes end every 3 or 4 steps)."""
    ids = np.arange(n)
    base = (10 * step + ids).astype(np.float32)
    if goal:
        obs = {
            "observation": np.stack([base, -base], 1),
            "achieved_goal": base[:, None],
            "desired_goal": np.full((n, 1), -100, np.float32),
        }
        nxt = {**obs, "achieved_goal": base[:, None] + 1}
    else:
        obs = np.stack([base, base + 0.5], 1)
        nxt = obs + 1
    return {
        "obs": obs,
        "act": (step + ids).astype(np.int32),
        "rew": (0.25 * step + ids).astype(np.float32),
        "terminated": (step + ids) % 4 == 3,
        "truncated": (step + 2 * ids) % 5 == 4,
        "obs_next": nxt,
    }


def fill(buf, n: int, steps: int, goal: bool = False):
    """``buf`` after ``steps`` adds of ``n`` rows (one env per row when vectorized)."""
    for s in range(steps):
        batch = rows(s, n, goal)
        if n == 1 and not hasattr(buf, "caches"):
            batch = jax.tree_util.tree_map(lambda x: x[0], batch)
            buf = buf.add(batch)[0]
        else:
            buf = buf.add(batch)[0]
    return buf


def empty_cases() -> dict:
    """Name -> the empty tree or buffer each fixture started from (a ``like=`` template)."""
    import jaxbuf
    from jaxbuf.cached import CachedReplayBuffer
    from jaxbuf.her import HERReplayBuffer

    return {
        "sum_tree": jaxbuf.SumTree.create(20),
        "min_tree": jaxbuf.MinTree.create(20),
        "rb": jaxbuf.ReplayBuffer.create(example(), 8),
        "vrb": jaxbuf.VectorReplayBuffer.create(example(), 12, 3),
        "cached": CachedReplayBuffer.create(example(), 10, 2, 4),
        "her": HERReplayBuffer.create(example(True), 10, her_reward, 3),
        "prb": jaxbuf.PrioritizedReplayBuffer.create(example(), 8, 0.6, 0.4),
        "pvrb": jaxbuf.PrioritizedVectorReplayBuffer.create(example(), 12, 3, 0.7, 0.5),
    }


KINDS = {
    "sum_tree": "sum_tree",
    "min_tree": "min_tree",
    "rb": "buffer",
    "vrb": "buffer",
    "cached": "buffer",
    "her": "buffer",
    "prb": "prioritized",
    "pvrb": "prioritized",
}


def build_cases() -> dict:
    """Name -> (object to save, kind) for every fixture, built with the installed jaxbuf."""
    empty = empty_cases()
    leaf_idx = jnp.array([0, 3, 4, 9, 17, 19, 3, 12], jnp.int32)  # 3 twice: the last wins
    leaf_val = jnp.array([1.0, 2.0, 4.0, 0.5, 3.0, 2.5, 6.0, 0.0], jnp.float32)
    prb = fill(empty["prb"], 1, 10)
    prb = prb.update_weight(jnp.array([0, 2, 5, 2]), jnp.array([0.5, 3.0, -1.5, 0.25]))
    pvrb = fill(empty["pvrb"], 3, 5)
    pvrb = pvrb.update_weight(jnp.array([1, 4, 8, 11]), jnp.array([2.0, 0.1, 5.0, 1.0]))
    built = {
        "sum_tree": empty["sum_tree"].set(leaf_idx, leaf_val),
        "min_tree": empty["min_tree"].set(leaf_idx, leaf_val + 1),
        "rb": fill(empty["rb"], 1, 11),
        "vrb": fill(empty["vrb"], 3, 6),
        "cached": fill(empty["cached"], 2, 9),
        "her": fill(empty["her"], 1, 12, goal=True),
        "prb": prb,
        "pvrb": pvrb,
    }
    return {name: (obj, KINDS[name]) for name, obj in built.items()}


def expectations(obj, kind: str) -> dict[str, np.ndarray]:
    """What a restored ``obj`` must reproduce, flat ``what -> array``."""
    key = jax.random.key(SAMPLE_KEY)
    if kind == "sum_tree":
        return {
            "leaves": np.asarray(obj.leaves()),
            "total": np.asarray(obj.total()),
            "prefix": np.asarray(obj.find_prefix_sum(jnp.asarray(QUERIES))),
            "draws": np.asarray(obj.sample(key, SAMPLE_SIZE)),
            "draws_stratified": np.asarray(obj.sample(key, SAMPLE_SIZE, stratified=True)),
        }
    if kind == "min_tree":
        return {"leaves": np.asarray(obj.leaves()), "min": np.asarray(obj.min())}
    core = obj.buffer if kind == "buffer" and hasattr(obj, "compute_reward_fn") else obj
    idx, mask = core.all_indices()  # HER forwards no all_indices: its core's
    idx = np.asarray(idx)[np.asarray(mask)]
    out = {"len": np.asarray(len(obj)), "indices": idx}
    read = obj[jnp.asarray(idx)]
    for path, leaf in jax.tree_util.tree_leaves_with_path(read):
        out["read/" + "/".join(str(getattr(p, "key", p)) for p in path)] = np.asarray(leaf)
    if kind == "prioritized":
        out["weight"] = np.asarray(obj.get_weight(jnp.asarray(idx)))
        out["tree_values"] = np.asarray(obj.tree.values())
        out["draws"] = np.asarray(obj.sample_indices(key, SAMPLE_SIZE))
        out["draws_stratified"] = np.asarray(obj.sample_indices(key, SAMPLE_SIZE, True))
    return out


def main() -> None:
    import jaxbuf

    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    expected = {}
    for name, (obj, kind) in build_cases().items():
        jaxbuf.save(OUT / name, obj)
        for what, value in expectations(obj, kind).items():
            expected[f"{name}/{what}"] = value
    np.savez(OUT / "expected.npz", **expected)
    print(f"wrote {len(expected)} expected arrays and {len(KINDS)} checkpoints to {OUT}")


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent.parent))
    main()
