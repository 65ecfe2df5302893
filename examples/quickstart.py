"""jaxbuf in five minutes, for a Tianshou user: the buffer tutorial, step by step, in JAX.

Run: python examples/quickstart.py

Status lines (what is compiling, how long each section took) go to stderr; the tutorial's
output is on stdout.
"""

# ruff: noqa: E402  (say what is happening before the slow imports)
from __future__ import annotations

from _status import Sections, say

say("importing jax and jaxbuf (a few seconds)...")

import pickle

import jax
import jax.numpy as jnp

import jaxbuf

SECTIONS = Sections()


def section(title: str) -> None:
    """Print the section header; on stderr, the time the previous section took."""
    SECTIONS.next(title)
    print(f"\n=== {title} " + "=" * max(0, 60 - len(title)), flush=True)


def transition(i, terminated=False, truncated=False):
    """One transition without a batch axis; every field is a JAX/NumPy value."""
    return {
        "obs": jnp.float32(i),
        "act": jnp.int32(i),
        "rew": jnp.float32(i),
        "terminated": jnp.bool_(terminated),
        "truncated": jnp.bool_(truncated),
        "obs_next": jnp.float32(i + 1),
        "info": {"step": jnp.int32(i)},
    }


def main() -> None:
    say(
        "each buffer operation compiles on its first call (jit), so most sections take a "
        "second or two; the timings below include that compilation"
    )
    section("Circular storage")
    # Storage shapes and dtypes come from one example transition; the buffer is a pytree.
    buf = jaxbuf.ReplayBuffer.create(transition(0), size=10)
    print(f"maxsize: {buf.maxsize}, len: {len(buf)}")
    for i in range(3):
        buf, _ = buf.add(transition(i))
    print(f"after 3 adds   -> len {len(buf)}, obs {buf.global_storage()['obs']}")
    for i in range(3, 13):
        buf, _ = buf.add(transition(i))
    print(
        f"after 13 adds  -> len {len(buf)}, obs {buf.global_storage()['obs']} (oldest overwritten)"
    )

    section("Indexing and slicing")
    print("buf[-1] (physical slot 9):", buf[-1]["obs"])
    print("buf[-3:] (last three added):", buf[-3:]["obs"])
    print("buf[jnp.array([0, 1])]:", buf[jnp.array([0, 1])]["obs"])

    section("Pickle")
    copy = pickle.loads(pickle.dumps(buf))
    print(
        "pickled and restored, same data:", bool(jnp.all(copy.storage["obs"] == buf.storage["obs"]))
    )

    section("Reserved keys")
    print("stored fields:", sorted(buf.storage), "+ derived 'done' = terminated | truncated")

    section("Sampling (explicit PRNG keys)")
    key = jax.random.key(0)
    batch, indices = buf.sample(key, batch_size=5)
    print("indices:", indices, "obs:", batch["obs"])
    for _, idx in buf.split(key, size=4, merge_last=True):
        print("  split minibatch:", idx)

    section("Episode tracking from add, with the loop jitted")
    # Three episodes: 3 steps (terminated), 5 steps (terminated), 5 steps (ongoing).
    # The whole collection loop is one jitted lax.scan over the buffer state.
    steps = jnp.arange(13)
    stream = jax.vmap(lambda i: transition(i, terminated=(i == 2) | (i == 7)))(steps)
    traj = jaxbuf.ReplayBuffer.create(transition(0), size=10)

    @jax.jit
    def collect(buf, stream):
        return jax.lax.scan(lambda b, x: b.add(x), buf, stream)

    traj, results = collect(traj, stream)
    for i in range(13):
        r = jax.tree_util.tree_map(lambda x, i=i: x[i].tolist(), results)
        print(
            f"  step {i:2d}: index {r.index}, return {r.episode_return}, "
            f"length {r.episode_length}, start {r.episode_start}"
        )

    section("prev / next / unfinished episodes")
    print("obs:", traj.storage["obs"])
    print("traj[6]:", {k: v.tolist() for k, v in traj[6].items() if k != "info"})
    print("prev([0..6]):", traj.prev(jnp.arange(7)))
    print("next([4..9]):", traj.next(jnp.arange(4, 10)))
    print("unfinished_index():", traj.unfinished_index(), "(one entry per sub-buffer, -1 = none)")

    section("Vector buffer: one sub-buffer per environment")
    vec = jaxbuf.VectorReplayBuffer.create(transition(0), total_size=8, buffer_num=2)
    batch2 = jax.vmap(transition)(jnp.arange(2))
    vec, res = vec.add(batch2)
    vec, res = vec.add(batch2, buffer_ids=jnp.array([1, 1]))
    print("sub-buffer lengths:", vec.lengths, "chronological:", vec.chronological_indices())

    section("Frame stacking")
    stacked = jaxbuf.ReplayBuffer.create(transition(0), size=10, stack_num=4)
    stacked, _ = collect(stacked, stream)
    print("obs stacks at [3, 4, 9]:\n", stacked[jnp.array([3, 4, 9])]["obs"])

    section("Episode-respecting sequences and epochs")
    seq, idx, mask = traj.sample_sequences(key, batch_size=3, length=4)
    print("sequence obs:\n", seq["obs"], "\nmask:\n", mask)
    mb, mb_mask = jax.jit(lambda b, k: b.epoch_indices(k, 4))(traj, key)
    print("one epoch of minibatches (-1 = padding):\n", mb)
    SECTIONS.end()
    say(f"total {sum(SECTIONS.times.values()):.1f} s after the imports")


if __name__ == "__main__":
    main()
