"""RLinf file mode I/O figures: trajectory file codecs, durable add throughput, sampling.

Run: ``PYTHONPATH=. python benchmarks/bench_trajectory_io.py [--repeats N]``. One trajectory
is T=16 chunk steps x B=8 envs with a 64x64x3 uint8 image, 8-dim states and 14-dim action
chunks (about 1.6 MB). Prints median wall times; with torch installed it also times
``torch.save``/``torch.load(weights_only=True)`` on the same payload for comparison.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import time

import numpy as np

from jaxbuf.trajectory import Trajectory, TrajectoryReplayBuffer
from jaxbuf.trajectory.formats import read_trajectory_file, write_trajectory_file
from jaxbuf.trajectory.torchfile import dump_pt, load_pt

T, B, E, C = 16, 8, 2, 7


def make(rng: np.random.Generator, tag: int) -> Trajectory:
    return Trajectory(
        model_weights_id=f"uuid_{tag}",
        actions=rng.normal(size=(T, B, C * 2)).astype(np.float32),
        rewards=rng.normal(size=(T, B, C)).astype(np.float32),
        dones=rng.random((T + E, B, C)) < 0.01,
        curr_obs={
            "main_images": rng.integers(0, 255, (T, B, 64, 64, 3), dtype=np.uint8),
            "states": rng.normal(size=(T, B, 8)).astype(np.float32),
        },
        next_obs={"states": rng.normal(size=(T, B, 8)).astype(np.float32)},
    )


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    traj = make(rng, 0)
    payload = traj.to_payload()
    size_mb = sum(v.nbytes for v in traj.flatten()["curr_obs"].values()) / 1e6
    print(f"trajectory: T={T} B={B}, ~{size_mb:.2f} MB of observations")
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in ("pt", "npz"):
            path = os.path.join(tmp, f"t.{fmt}")
            w = timed(
                lambda fmt=fmt, path=path: write_trajectory_file(path, payload, fmt), args.repeats
            )
            r = timed(lambda fmt=fmt, path=path: read_trajectory_file(path, fmt), args.repeats)
            print(f"{fmt:>4}: atomic write+fsync {w * 1e3:7.2f} ms   read {r * 1e3:7.2f} ms")
        mem = timed(lambda: dump_pt(payload, io.BytesIO()), args.repeats)
        blob = io.BytesIO()
        dump_pt(payload, blob)
        back = timed(lambda: load_pt(io.BytesIO(blob.getvalue())), args.repeats)
        print(f"  pt codec in memory: encode {mem * 1e3:.2f} ms, decode {back * 1e3:.2f} ms")
        try:
            import torch
        except ImportError:
            torch = None
        if torch is not None:
            tpay = {
                k: (
                    {kk: torch.from_numpy(vv) for kk, vv in v.items()}
                    if isinstance(v, dict)
                    else torch.from_numpy(v)
                    if isinstance(v, np.ndarray)
                    else v
                )
                for k, v in payload.items()
            }
            tsave = timed(lambda: torch.save(tpay, io.BytesIO()), args.repeats)
            tbuf = io.BytesIO()
            torch.save(tpay, tbuf)
            tload = timed(
                lambda: torch.load(io.BytesIO(tbuf.getvalue()), weights_only=True), args.repeats
            )
            print(
                f"  torch {torch.__version__} in memory: save {tsave * 1e3:.2f} ms, "
                f"load {tload * 1e3:.2f} ms"
            )

        n = 32
        trajs = [make(rng, i) for i in range(n)]
        buffer = TrajectoryReplayBuffer(
            storage_dir=os.path.join(tmp, "live"), cache_size=8, sample_window_size=0
        )
        start = time.perf_counter()
        buffer.add_trajectories(trajs)
        queued = time.perf_counter() - start
        buffer.flush()
        total = time.perf_counter() - start
        print(
            f"add {n} trajectories: returns in {queued * 1e3:.1f} ms, durable after "
            f"{total * 1e3:.0f} ms ({n / total:.1f} traj/s)"
        )
        buffer.sample(256)
        warm = timed(lambda: buffer.sample(256), args.repeats)
        buffer.clear_cache()
        cold = timed(lambda: (buffer.clear_cache(), buffer.sample(256)), args.repeats)
        print(
            f"sample(256) over {n} trajectories: cache 8 (mostly disk) {warm * 1e3:.1f} ms; "
            f"after clear_cache {cold * 1e3:.1f} ms"
        )
        everything = TrajectoryReplayBuffer(
            save_trajectories=False, sample_window_size=0, cache_size=n
        )
        everything.add_trajectories(trajs)
        hot = timed(lambda: everything.sample(256), args.repeats)
        print(f"sample(256) all in memory: {hot * 1e3:.2f} ms")
        buffer.close()


if __name__ == "__main__":
    main()
