"""RLinf file mode end to end: producers, checkpoint, restart, a rank's share, jitted updates.

The workflow of an RLinf-style off-policy learner with two actor ranks:

1. Two producer threads (one per rank, standing in for rollout workers) add trajectories to
   their rank's ``TrajectoryReplayBuffer`` with persistence on; a learner samples batches
   straight to jax arrays and trains a linear policy ``a = s @ W`` by behaviour cloning with
   a jitted SGD step, while the producers are still adding.
2. A checkpoint: each rank's buffer goes to ``<ckpt>/replay_buffer/rank_{r}`` and the params
   to ``<ckpt>/params.npy``.
3. A restart: fresh buffers (new storage dirs) load the checkpoint and resume; the resumed
   sampler continues the exact sequence the old one would have drawn.
4. The rank buffers are merged into one demo buffer and each rank loads its share of it
   (``is_distributed=True``), as RLinf does for ``demo_buffer.load_path``.
5. Training continues on the resumed buffer.

Run ``python examples/rlinf_mode.py --smoke`` for a fast check, or without it for a longer
run; ``--workdir`` keeps the files (default: a temporary directory that is removed).
Status lines (what is compiling, how long each stage took) go to stderr.
"""

# ruff: noqa: E402  (say what is happening before the slow imports)
from __future__ import annotations

from _status import Sections, phase, say

say("importing jax and jaxbuf (a few seconds)...")

import argparse
import os
import tempfile
import threading

import jax
import jax.numpy as jnp
import numpy as np

from jaxbuf.trajectory import Trajectory, TrajectoryReplayBuffer, merge_buffers

OBS_DIM, CHUNK, ACT_DIM = 6, 2, 2  # an action chunk of 2 actions of dim 2 -> actions [.., 4]


def make_trajectory(
    rng: np.random.Generator,
    w_true: np.ndarray,
    steps: int,
    envs: int,
    epochs: int,
    policy_version: int,
) -> Trajectory:
    """One rollout window: ``[T, B, ...]`` with ``dones`` carrying one reset row per epoch."""
    states = rng.normal(size=(steps, envs, OBS_DIM)).astype(np.float32)
    actions = states @ w_true + 0.05 * rng.normal(size=(steps, envs, CHUNK * ACT_DIM))
    rewards = -np.abs(actions.reshape(steps, envs, CHUNK, ACT_DIM)).sum(-1)
    dones = rng.random((steps + epochs, envs, CHUNK)) < 0.05
    return Trajectory(
        max_episode_length=steps * CHUNK,
        model_weights_id=f"policy-uuid_{policy_version}",
        actions=actions.astype(np.float32),
        rewards=rewards.astype(np.float32),
        dones=dones,
        terminations=dones.copy(),
        truncations=np.zeros_like(dones),
        curr_obs={"states": states},
        next_obs={"states": np.roll(states, -1, axis=0)},
    )


@jax.jit
def sgd_step(w: jax.Array, batch: dict, lr: float = 0.1) -> tuple[jax.Array, jax.Array]:
    """One behaviour-cloning step: minimise mean ||s @ W - a||^2 over the sampled chunks."""

    def loss_fn(w):
        pred = batch["curr_obs"]["states"] @ w
        return jnp.mean(jnp.sum((pred - batch["actions"]) ** 2, axis=-1))

    loss, grad = jax.value_and_grad(loss_fn)(w)
    return w - lr * grad, loss


def produce(
    buffer: TrajectoryReplayBuffer,
    seed: int,
    w_true: np.ndarray,
    count: int,
    shape: tuple[int, int, int],
) -> None:
    rng = np.random.default_rng(seed)
    for k in range(count):
        buffer.add_trajectories([make_trajectory(rng, w_true, *shape, policy_version=k // 4)])
    buffer.flush()  # everything this producer added is durable on disk


def train(
    buffer: TrajectoryReplayBuffer,
    w: jax.Array,
    steps: int,
    batch_size: int,
    label: str,
    compiles: bool = False,
) -> jax.Array:
    """``steps`` SGD steps on batches sampled from ``buffer``; ``compiles``: the first step
    compiles ``sgd_step`` (say so on stderr)."""
    for step in range(1, steps + 1):
        batch = buffer.sample_jax(batch_size)
        if step == 1 and compiles:
            with phase("compiling the jitted SGD step", "first call, about a second"):
                w, loss = jax.block_until_ready(sgd_step(w, batch))
        else:
            w, loss = sgd_step(w, batch)
        if step == 1 or step % max(1, steps // 4) == 0:
            print(
                f"[{label}] step {step:4d}  loss {float(loss):.4f}  "
                f"buffer {len(buffer)} trajectories / {buffer.total_samples} chunks",
                flush=True,
            )
    return w


def run(workdir: str, smoke: bool) -> dict:
    ranks = 2
    per_rank = 6 if smoke else 40
    shape = (4, 4, 2) if smoke else (16, 8, 2)  # T chunk steps, B envs, E rollout epochs
    steps = 40 if smoke else 400
    batch_size = 32 if smoke else 256
    w_true = np.random.default_rng(0).normal(size=(OBS_DIM, CHUNK * ACT_DIM)).astype(np.float32)
    stages = Sections()

    stages.next("stage 1")
    print("== 1. producers add trajectories (persistence on) while rank 0 trains", flush=True)
    buffers = [
        TrajectoryReplayBuffer(
            seed=100 + r,
            storage_dir=os.path.join(workdir, "run1", "replay_buffer", f"rank_{r}"),
            cache_size=8,
            sample_window_size=0,
            save_trajectories=True,
        )
        for r in range(ranks)
    ]
    for r, buffer in enumerate(buffers):
        produce(buffer, seed=r, w_true=w_true, count=2, shape=shape)  # warm-up
    producers = [
        threading.Thread(target=produce, args=(b, 10 + r, w_true, per_rank - 2, shape))
        for r, b in enumerate(buffers)
    ]
    for thread in producers:
        thread.start()
    w0 = jnp.zeros((OBS_DIM, CHUNK * ACT_DIM))
    w = train(buffers[0], w0, steps // 2, batch_size, "run 1", compiles=True)
    for thread in producers:
        thread.join()

    stages.next("stage 2")
    print("== 2. checkpoint", flush=True)
    ckpt = os.path.join(workdir, "ckpt")
    for r, buffer in enumerate(buffers):
        buffer.save_checkpoint(os.path.join(ckpt, "replay_buffer", f"rank_{r}"))
    np.save(os.path.join(ckpt, "params.npy"), np.asarray(w))
    expected_next = buffers[0].sample(batch_size)["rewards"]  # what run 1 would draw next
    for buffer in buffers:
        buffer.close()
    print(f"saved {sum(len(b) for b in buffers)} trajectories to {ckpt}", flush=True)

    stages.next("stage 3")
    print("== 3. restart: fresh buffers resume from the checkpoint", flush=True)
    resumed = []
    for r in range(ranks):
        buffer = TrajectoryReplayBuffer(
            storage_dir=os.path.join(workdir, "run2", "replay_buffer", f"rank_{r}"),
            cache_size=8,
            sample_window_size=0,
        )
        report = buffer.load_checkpoint(os.path.join(ckpt, "replay_buffer", f"rank_{r}"))
        print(
            f"rank {r}: loaded {len(report.loaded)} trajectories, skipped {len(report.skipped)}",
            flush=True,
        )
        resumed.append(buffer)
    same = bool(np.array_equal(resumed[0].sample(batch_size)["rewards"], expected_next))
    print(f"resumed sampler continues the same sequence: {same}", flush=True)
    w = jnp.asarray(np.load(os.path.join(ckpt, "params.npy")))

    stages.next("stage 4")
    print("== 4. merge the rank buffers into a demo buffer; load each rank's share", flush=True)
    merged = merge_buffers(os.path.join(ckpt, "replay_buffer"), os.path.join(workdir, "demo"))
    shares = []
    for r in range(ranks):
        demo = TrajectoryReplayBuffer(save_trajectories=False, sample_window_size=0, cache_size=4)
        report = demo.load_checkpoint(
            merged.save_path, is_distributed=True, local_rank=r, world_size=ranks
        )
        shares.append(report.loaded)
        print(
            f"rank {r}: demo share ids {report.loaded[0]}..{report.loaded[-1]} "
            f"({len(report.loaded)} of {merged.count})",
            flush=True,
        )

    stages.next("stage 5")
    print("== 5. continue training on the resumed buffer", flush=True)
    produce(resumed[0], seed=99, w_true=w_true, count=2, shape=shape)
    w = train(resumed[0], w, steps - steps // 2, batch_size, "run 2")
    for buffer in resumed:
        buffer.close()
    error = float(jnp.max(jnp.abs(w - w_true)))
    print(f"max |W - W_true| = {error:.4f}", flush=True)
    stages.end()
    return {"same_sequence": same, "shares": shares, "merged": merged.count, "w_error": error}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, a few seconds")
    parser.add_argument("--workdir", help="keep the files here (default: a temporary dir)")
    args = parser.parse_args()
    if args.workdir:
        result = run(args.workdir, args.smoke)
    else:
        with tempfile.TemporaryDirectory(prefix="jaxbuf-rlinf-") as workdir:
            result = run(workdir, args.smoke)
    if not result["same_sequence"]:
        raise SystemExit("resumed sampling diverged from the checkpointed sequence")
    print("done", flush=True)


if __name__ == "__main__":
    main()
