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
    assert not any(".tmp-" in name for name in os.listdir(storage))  # cleaned up on open


SAVER = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[3])
    from trajectory_helpers import make_traj
    from jaxbuf.trajectory import TrajectoryReplayBuffer

    # Each generation g re-adds trajectories 0..3 (same names, model_weights_id "") with tag
    # 10*g + i, then saves over the same checkpoint.
    buffer = TrajectoryReplayBuffer(storage_dir=sys.argv[1], cache_size=1)
    g = 0
    while True:
        buffer.clear()
        buffer.add_trajectories([make_traj(10 * g + i, T=8, B=4) for i in range(4)])
        buffer.save_checkpoint(sys.argv[2])
        print("SAVED", g, flush=True)
        g += 1
""")


def _env(tests_dir):
    return dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([os.path.dirname(tests_dir), os.environ.get("PYTHONPATH", "")]),
    )


@pytest.mark.parametrize("delay", [0.0, 0.006, 0.02])
def test_sigkill_during_checkpoint_overwrite_leaves_one_whole_generation(tmp_path, delay):
    """Killed at staggered delays after its second save, the checkpoint at the path is one
    generation, bit for bit (the four tags of one g, checksums verified), never a mix."""
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    script = tmp_path / "saver.py"
    script.write_text(SAVER)
    ckpt = str(tmp_path / "ckpt")
    child = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "live"), ckpt, tests_dir],
        stdout=subprocess.PIPE,
        text=True,
        env=_env(tests_dir),
    )
    saved = -1
    try:
        while saved < 1:
            line = child.stdout.readline()
            assert line, "child exited early"
            saved = int(line.split()[1])
        time.sleep(delay)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
        child.stdout.close()
    reader = TrajectoryReplayBuffer(save_trajectories=False, sample_window_size=0)
    assert reader.load_checkpoint(ckpt).loaded == [0, 1, 2, 3]
    tags = sorted(set((reader.sample(2000)["rewards"][:, 0] // 10_000).astype(int)))
    assert len(tags) == 4 and len({t // 10 for t in tags}) == 1, tags
    # a rerun of the same buffer (resumed from its storage_dir) saves over it again
    resumed = TrajectoryReplayBuffer(storage_dir=str(tmp_path / "live"), sample_window_size=0)
    resumed.save_checkpoint(ckpt)
    resumed.close()
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".ckpt.tmp-")]


MOVER = textwrap.dedent("""
    import sys, time
    import jaxbuf.trajectory.transfer as transfer
    from jaxbuf.trajectory import merge_buffers

    real, stall = transfer.atomic_move, int(sys.argv[3])
    count = [0]

    def move(src, dst):
        real(src, dst)
        count[0] += 1
        if count[0] == stall:
            print("MOVED", count[0], flush=True)
            time.sleep(600)

    transfer.atomic_move = move
    merge_buffers(sys.argv[1], sys.argv[2], mode="move")
    print("DONE", flush=True)
""")


@pytest.mark.parametrize("stall", [1, 3, 5])
def test_sigkill_mid_merge_move_is_finished_by_the_rerun(tmp_path, stall):
    from jaxbuf.cli import main

    tests_dir = os.path.dirname(os.path.abspath(__file__))
    src = tmp_path / "src"
    for rank in range(2):
        live = TrajectoryReplayBuffer(storage_dir=str(src / f"rank_{rank}"))
        live.add_trajectories([make_traj(100 * rank + i, mwid="u") for i in range(3)])
        live.close()
    script = tmp_path / "mover.py"
    script.write_text(MOVER)
    dst = str(tmp_path / "merged")
    child = subprocess.Popen(
        [sys.executable, str(script), str(src), dst, str(stall)],
        stdout=subprocess.PIPE,
        text=True,
        env=_env(tests_dir),
    )
    try:
        assert child.stdout.readline().split() == ["MOVED", str(stall)]
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
        child.stdout.close()
    reader = TrajectoryReplayBuffer(save_trajectories=False, sample_window_size=0)
    with pytest.raises(Exception, match="interrupted merge"):
        reader.load_checkpoint(dst)
    argv = ["merge", "--source-path", str(src), "--save-path", dst, "--move", "--quiet"]
    assert main(argv) == 0
    assert reader.load_checkpoint(dst).loaded == list(range(6))
    tags = sorted(set((reader.sample(3000)["rewards"][:, 0] // 10_000).astype(int)))
    assert tags == [0, 1, 2, 100, 101, 102]
    assert os.listdir(src / "rank_0") == [] and os.listdir(src / "rank_1") == []
