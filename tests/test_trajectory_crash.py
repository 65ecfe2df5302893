"""A producer killed with SIGKILL mid-run: the directory it leaves is a valid buffer.

The child adds trajectories (about 0.4 MB each) in a loop, calls ``flush()`` after every third
add and then prints ``ACK <last id>``. The parent kills it (SIGKILL) right after an ACK, a
little later (while adds are being written), or, deterministically, while a trajectory file is
half written (the child's writer pauses in the middle of the temporary file and says
``WRITING <path>``). Afterwards every acknowledged trajectory must be listed, the half-written
one must not be, every listed file must decode and match its index entry, and the directory
must load both as a checkpoint and as a resumed ``storage_dir``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from trajectory_helpers import assert_rows_consistent, make_traj

from jaxbuf.trajectory import TrajectoryReplayBuffer, read_listing

CHILD = textwrap.dedent("""
    import io, sys, time
    sys.path.insert(0, sys.argv[2])
    from trajectory_helpers import make_traj
    import jaxbuf.trajectory.buffer as buffer_module
    from jaxbuf.trajectory import TrajectoryReplayBuffer
    from jaxbuf.trajectory.atomic import atomic_write
    from jaxbuf.trajectory.torchfile import dump_pt

    stall_from = int(sys.argv[3])  # trajectory id whose write stalls half-way (-1: none)
    real_write = buffer_module.write_trajectory_file

    def write(path, payload, fmt):
        if stall_from < 0 or f"trajectory_{stall_from}_" not in path:
            return real_write(path, payload, fmt)
        data = io.BytesIO()
        dump_pt(payload, data)
        with atomic_write(path) as fh:
            fh.write(data.getvalue()[: len(data.getvalue()) // 2])
            fh.flush()
            print("WRITING", path, flush=True)
            time.sleep(600)

    buffer_module.write_trajectory_file = write
    buffer = TrajectoryReplayBuffer(storage_dir=sys.argv[1], cache_size=1)
    i = 0
    while True:
        ids = buffer.add_trajectories([make_traj(i, T=8, B=4, image=(32, 32, 3))])
        i += 1
        if i % 3 == 0:
            buffer.flush()
            print("ACK", ids[-1], flush=True)
""")


@pytest.mark.parametrize("mode", ["after-ack", "timed", "mid-write"])
def test_sigkill_mid_run_keeps_every_acknowledged_trajectory(tmp_path, mode):
    storage = str(tmp_path / "live")
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([os.path.dirname(tests_dir), os.environ.get("PYTHONPATH", "")]),
    )
    stall = 7 if mode == "mid-write" else -1
    child = subprocess.Popen(
        [sys.executable, str(script), storage, tests_dir, str(stall)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    acked, writing = -1, None
    try:
        while True:
            line = child.stdout.readline()
            assert line, "child exited early"
            word, arg = line.split()
            if word == "ACK":
                acked = int(arg)
            else:
                writing = arg
            if mode == "mid-write" and writing or mode != "mid-write" and acked >= 5:
                break
        if mode == "timed":
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL

    listing = read_listing(storage)
    assert listing.ids == list(range(len(listing.ids)))
    assert set(range(acked + 1)) <= set(listing.ids)
    assert all(path is not None for path in listing.paths.values())
    if mode == "mid-write":
        assert acked == 5 and 7 not in listing.ids and not os.path.exists(writing)
        assert any(name.startswith(".trajectory_7_") for name in os.listdir(storage))
    reader = TrajectoryReplayBuffer(save_trajectories=False, sample_window_size=0)
    report = reader.load_checkpoint(storage)  # verify=True: decodes every listed file
    assert report.skipped == [] and report.loaded == listing.ids
    assert_rows_consistent(reader.sample(256), 256)

    resumed = TrajectoryReplayBuffer(storage_dir=storage, sample_window_size=0)
    next_id = resumed.add_trajectories([make_traj(999, T=8, B=4, image=(32, 32, 3))])[0]
    assert next_id >= len(listing.ids)
    resumed.close()
    assert read_listing(storage).ids == listing.ids + [next_id]
