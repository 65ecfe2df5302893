"""RLinf file mode: trajectory file codecs, durable adds and sampling (host-side work).

One trajectory is 16 chunk steps x 8 envs with a 64x64x3 uint8 image, 8-dim states and
14-dim action chunks (about 1.6 MB). Rows:

* ``trajectory/write``, ``trajectory/read``: one atomic, fsynced file write / one read, in
  the ``pt`` and ``npz`` formats (``params.format``);
* ``trajectory/encode``, ``trajectory/decode``: jaxbuf's ``.pt`` codec in memory, against
  ``torch.save`` / ``torch.load(weights_only=True)`` of the same tensors (``torch``, optional);
* ``trajectory/add``: ``add_trajectories`` of 32 trajectories then ``flush`` (durable), per
  trajectory;
* ``trajectory/sample``: ``sample(256)`` over the 32 with a cache of 8 (mostly from disk) and
  with everything in memory (``jaxbuf[memory]``).
"""

from __future__ import annotations

import io
import itertools
import os
import tempfile

import numpy as np

from benchmarks import peers
from benchmarks.harness import Case, unavailable

T, B, E, C = 16, 8, 2, 7
UNIT = "us per trajectory"
N_TRAJ = 32


def make(rng: np.random.Generator, tag: int):
    """One synthetic trajectory."""
    from jaxbuf.trajectory import Trajectory

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


def _torch_payload(torch, payload: dict) -> dict:
    def conv(v):
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return torch.from_numpy(v) if isinstance(v, np.ndarray) else v

    return conv(payload)


def _codecs(tmp: str, payload: dict) -> list:
    from jaxbuf.trajectory.formats import read_trajectory_file, write_trajectory_file
    from jaxbuf.trajectory.torchfile import dump_pt, load_pt

    out: list = []
    for fmt in ("pt", "npz"):
        path = os.path.join(tmp, f"t.{fmt}")
        params = {"format": fmt}
        write_trajectory_file(path, payload, fmt)
        out += [
            Case(
                "trajectory/write",
                params,
                "jaxbuf",
                lambda p=path, f=fmt: write_trajectory_file(p, payload, f),
                1,
                UNIT,
            ),
            Case(
                "trajectory/read",
                params,
                "jaxbuf",
                lambda p=path, f=fmt: read_trajectory_file(p, f),
                1,
                UNIT,
            ),
        ]
    blob = io.BytesIO()
    dump_pt(payload, blob)
    raw = blob.getvalue()
    params = {"format": "pt"}
    out += [
        Case(
            "trajectory/encode", params, "jaxbuf", lambda: dump_pt(payload, io.BytesIO()), 1, UNIT
        ),
        Case("trajectory/decode", params, "jaxbuf", lambda: load_pt(io.BytesIO(raw)), 1, UNIT),
    ]
    torch, why = peers.module("torch")
    if torch is None:
        out += [
            unavailable(w, params, "torch", UNIT, why)
            for w in ("trajectory/encode", "trajectory/decode")
        ]
    else:
        tpay = _torch_payload(torch, payload)
        tblob = io.BytesIO()
        torch.save(tpay, tblob)
        traw = tblob.getvalue()
        out += [
            Case(
                "trajectory/encode",
                params,
                "torch",
                lambda: torch.save(tpay, io.BytesIO()),
                1,
                UNIT,
            ),
            Case(
                "trajectory/decode",
                params,
                "torch",
                lambda: torch.load(io.BytesIO(traw), weights_only=True),
                1,
                UNIT,
            ),
        ]
    return out


def _buffers(tmp: str, trajs: list) -> tuple[tuple, list]:
    from jaxbuf.trajectory import TrajectoryReplayBuffer

    counter = itertools.count()

    def durable_add():
        buf = TrajectoryReplayBuffer(
            storage_dir=os.path.join(tmp, f"add{next(counter)}"),
            cache_size=8,
            sample_window_size=0,
        )
        buf.add_trajectories(trajs)
        buf.flush()
        buf.close()

    disk = TrajectoryReplayBuffer(
        storage_dir=os.path.join(tmp, "live"), cache_size=8, sample_window_size=0
    )
    disk.add_trajectories(trajs)
    disk.flush()
    memory = TrajectoryReplayBuffer(
        save_trajectories=False, sample_window_size=0, cache_size=len(trajs)
    )
    memory.add_trajectories(trajs)
    params = {"trajectories": len(trajs), "chunks": 256}
    unit = "us per sample(256)"
    return (disk, memory), [
        Case(
            "trajectory/add", {"trajectories": len(trajs)}, "jaxbuf", durable_add, len(trajs), UNIT
        ),
        Case("trajectory/sample", params, "jaxbuf", lambda: disk.sample(256), 1, unit),
        Case("trajectory/sample", params, "jaxbuf[memory]", lambda: memory.sample(256), 1, unit),
    ]


def groups(cfg):
    """Codecs, then buffers; files live in a temporary folder removed afterwards."""
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="jaxbuf-bench-") as tmp:
        yield _codecs(tmp, make(rng, 0).to_payload())
        open_buffers, cases = _buffers(tmp, [make(rng, i) for i in range(N_TRAJ)])
        yield cases
        for buf in open_buffers:
            buf.close()
