"""Soak test of RLinf file mode under SIGKILL: many kills at random points, then checks.

Not run by CI (the tests run a fixed, small number of kills). Three children are killed at
random moments, ``--kills`` times each:

* ``produce``: adds trajectories, flushes and prints ``ACK <id>``; after every kill the
  directory must list every acknowledged id, and every listed file must verify;
* ``save``: clears, re-adds four trajectories under the same names and saves over one
  checkpoint; after every kill the checkpoint must hold one whole generation;
* ``move``: ``merge --move`` of two rank buffers; after every kill, rerunning the same
  command must finish it with every trajectory present exactly once.

Usage::

    python benchmarks/trajectory_soak.py --kills 50 --seed 0 [--workdir DIR]

Prints one line per scenario (kills, violations) and exits 1 on any violation.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests")
sys.path[:0] = [ROOT, TESTS]

from trajectory_helpers import make_traj  # noqa: E402

from jaxbuf.cli import main as cli_main  # noqa: E402
from jaxbuf.trajectory import TrajectoryReplayBuffer, read_listing  # noqa: E402

PRODUCER = textwrap.dedent("""
    import sys
    sys.path[:0] = [sys.argv[2]]
    from trajectory_helpers import make_traj
    from jaxbuf.trajectory import TrajectoryReplayBuffer
    buffer = TrajectoryReplayBuffer(storage_dir=sys.argv[1], cache_size=1)
    print("READY", flush=True)
    i = 0
    while True:
        ids = buffer.add_trajectories([make_traj(i % 900, T=8, B=4, image=(16, 16, 3))])
        i += 1
        if i % 2 == 0:
            buffer.flush()
            print("ACK", ids[-1], flush=True)
""")

SAVER = textwrap.dedent("""
    import sys
    sys.path[:0] = [sys.argv[3]]
    from trajectory_helpers import make_traj
    from jaxbuf.trajectory import TrajectoryReplayBuffer
    buffer = TrajectoryReplayBuffer(storage_dir=sys.argv[1], cache_size=1)
    print("READY", flush=True)
    g = 0
    while True:
        buffer.clear()
        buffer.add_trajectories([make_traj((10 * g + i) % 900, T=8, B=4) for i in range(4)])
        buffer.save_checkpoint(sys.argv[2])
        g += 1
""")

MOVER = textwrap.dedent("""
    import sys
    from jaxbuf.trajectory import merge_buffers
    print("READY", flush=True)
    merge_buffers(sys.argv[1], sys.argv[2], mode="move")
    print("DONE", flush=True)
""")


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))


def _spawn(script: str, *args: str) -> subprocess.Popen:
    child = subprocess.Popen(
        [sys.executable, script, *args], stdout=subprocess.PIPE, text=True, env=_env()
    )
    assert child.stdout.readline().strip() == "READY"
    return child


def _kill(child: subprocess.Popen) -> None:
    child.send_signal(signal.SIGKILL)
    child.wait(30)
    child.stdout.close()


def _reader() -> TrajectoryReplayBuffer:
    return TrajectoryReplayBuffer(save_trajectories=False, sample_window_size=0)


def soak_produce(work: str, kills: int, rng: random.Random) -> int:
    script = os.path.join(work, "produce.py")
    open(script, "w").write(PRODUCER)
    storage, acked, bad = os.path.join(work, "produce"), -1, 0
    for _ in range(kills):
        child = _spawn(script, storage, TESTS)
        deadline = time.monotonic() + rng.uniform(0.05, 1.5)
        while time.monotonic() < deadline:
            word, arg = child.stdout.readline().split()
            acked = max(acked, int(arg))
        _kill(child)
        listing = read_listing(storage)
        if not set(range(acked + 1)) <= set(listing.ids):
            bad += 1
        try:
            _reader().load_checkpoint(storage)
        except Exception as exc:  # noqa: BLE001 - any failure is a violation
            print("  produce:", exc)
            bad += 1
    return bad


def soak_save(work: str, kills: int, rng: random.Random) -> int:
    script = os.path.join(work, "save.py")
    open(script, "w").write(SAVER)
    storage, ckpt, bad = os.path.join(work, "save"), os.path.join(work, "ckpt"), 0
    for _ in range(kills):
        child = _spawn(script, storage, ckpt, TESTS)
        time.sleep(rng.uniform(0.05, 1.0))
        _kill(child)
        if not os.path.exists(os.path.join(ckpt, "metadata.json")):
            continue  # killed before the first save finished: no checkpoint yet is allowed
        reader = _reader()
        try:
            reader.load_checkpoint(ckpt)
            tags = set((reader.sample(2000)["rewards"][:, 0] // 10_000).astype(int))
            if len(tags) != 4 or len({t // 10 for t in tags}) != 1:
                print("  save: mixed generations", sorted(tags))
                bad += 1
        except Exception as exc:  # noqa: BLE001
            print("  save:", exc)
            bad += 1
    return bad


def soak_move(work: str, kills: int, rng: random.Random) -> int:
    script = os.path.join(work, "move.py")
    open(script, "w").write(MOVER)
    bad = 0
    for k in range(kills):
        src, dst = os.path.join(work, f"src{k}"), os.path.join(work, f"merged{k}")
        for rank in range(2):
            live = TrajectoryReplayBuffer(storage_dir=os.path.join(src, f"rank_{rank}"))
            live.add_trajectories([make_traj(100 * rank + i, mwid="u") for i in range(20)])
            live.close()
        child = _spawn(script, src, dst)
        time.sleep(rng.uniform(0.0, 0.4))
        _kill(child)
        finished = os.path.isfile(os.path.join(dst, "metadata.json")) and not os.path.exists(
            os.path.join(dst, ".jaxbuf-incomplete.json")
        )
        argv = ["merge", "--source-path", src, "--save-path", dst, "--move", "--quiet"]
        if not finished and cli_main(argv) != 0:  # a finished merge has nothing to rerun
            bad += 1
            continue
        reader = _reader()
        if reader.load_checkpoint(dst).loaded != list(range(40)):
            bad += 1
        shutil.rmtree(src)
        shutil.rmtree(dst)
    return bad


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20, help="kills per scenario")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="default: a fresh temporary directory")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = args.workdir or tempfile.mkdtemp(prefix="jaxbuf-soak-")
    os.makedirs(work, exist_ok=True)
    failed = 0
    for name, run in (("produce", soak_produce), ("save", soak_save), ("move", soak_move)):
        start = time.monotonic()
        bad = run(work, args.kills, rng)
        failed += bad
        print(f"{name}: {args.kills} kills, {bad} violations ({time.monotonic() - start:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
