"""Tests of jaxbuf.sharding.

The device count of a JAX process is fixed when jax starts, so the cases that need 8
devices live in ``_sharding_cases.py`` and run in one subprocess started with
``XLA_FLAGS=--xla_force_host_platform_device_count=8``; each case is reported here as its own
test. The multi-host test starts two processes that form one JAX cluster on localhost
(``jax.distributed.initialize``, CPU, gloo collectives). The one-device tests run in this
process.
"""

from __future__ import annotations

import ast
import os
import socket
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import jax
import numpy as np
import pytest
from _sharding_data import assert_trees_equal, builder, stacked_rows
from helpers import transition
from jax.sharding import PartitionSpec as P

import jaxbuf
from jaxbuf import sharding as shd

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
CASES = (TESTS / "_sharding_cases.py", TESTS / "_sharding_prioritized_cases.py")
WORKER = TESTS / "_multihost_worker.py"


def _env(device_count: int) -> dict:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={device_count}",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": path,
    }


def _case_names() -> list[str]:
    return [
        n.name
        for path in CASES
        for n in ast.parse(path.read_text()).body
        if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")
    ]


@pytest.fixture(scope="module")
def eight_device_report(tmp_path_factory) -> tuple[dict, str]:
    """Run the 8-device cases once; map each test id to its failure text (None: passed)."""
    xml = tmp_path_factory.mktemp("sharding") / "cases.xml"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            *map(str, CASES),
            "-q",
            "-p",
            "no:cacheprovider",
            f"--junitxml={xml}",
        ],
        cwd=ROOT,
        env=_env(8),
        capture_output=True,
        text=True,
        timeout=900,
    )
    log = (proc.stdout + proc.stderr)[-4000:]
    if not xml.exists():
        pytest.fail(f"the 8-device subprocess wrote no report (rc={proc.returncode}):\n{log}")
    outcomes = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        bad = [c for c in case if c.tag in ("failure", "error", "skipped")]
        outcomes[case.get("name")] = None if not bad else (bad[0].text or bad[0].get("message"))
    return outcomes, log


@pytest.mark.parametrize("case", _case_names())
def test_eight_devices(eight_device_report, case):
    outcomes, log = eight_device_report
    ran = {
        name: out for name, out in outcomes.items() if name == case or name.startswith(case + "[")
    }
    assert ran, f"{case} did not run in the 8-device subprocess:\n{log}"
    failed = {name: out for name, out in ran.items() if out is not None}
    assert not failed, "\n\n".join(f"{name}:\n{out}" for name, out in failed.items())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_on_localhost(tmp_path):
    """Two JAX processes x 2 CPU devices: host-local rows, shard-local and global sampling,
    a collective checkpoint; then this single-device process restores that checkpoint."""
    port = str(_free_port())
    ckpt = tmp_path / "buf"
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(i), port, str(ckpt)],
            cwd=TESTS,
            env=_env(2),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=300)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for i, (p, out) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0 and f"process {i} ok" in out, f"process {i}:\n{out[-4000:]}"
    # Each process wrote the shards it owns into its own OCDBT sub-store (orbax's layout).
    assert len(list(ckpt.glob("*/buffer/ocdbt.process_[01]"))) == 2
    # Saved from 4 devices on 2 hosts, restored here onto one device.
    restored = jaxbuf.restore(ckpt)
    want = builder("stack2", 80, 8)(stacked_rows(np.arange(8)))
    assert isinstance(restored, jaxbuf.VectorReplayBuffer)
    assert_trees_equal(restored, want)
    # The prioritized buffer saved with 4 per-shard trees, restored onto this one device.
    mesh = jax.make_mesh((1,), ("env",), devices=jax.devices()[:1])
    per = shd.restore_sharded(str(ckpt) + "_per", mesh, "env")
    assert per.tree.leaves.shape[0] == 1
    flat = shd.unshard(per)
    assert_trees_equal(flat.buffer, want)
    prio = np.asarray(flat.priorities())
    assert (prio > 0).all() and float(per.max_prio) == 3.0
    assert len(set(np.round(prio, 5))) > 1  # the updated priorities survived


EXAMPLE = transition((2,))


def test_one_device_mesh_is_the_unsharded_buffer_with_a_folded_key():
    mesh = jax.make_mesh((1,), ("env",), devices=jax.devices()[:1])
    sb = shd.create_sharded(EXAMPLE, 12, 3, mesh, "env")
    ref = jaxbuf.VectorReplayBuffer.create(EXAMPLE, 12, 3)
    ref_add = jax.jit(lambda b, x: b.add(x))
    for t in range(6):
        batch = {
            "obs": np.full((3, 2), t, np.float32),
            "act": np.arange(3, dtype=np.int32) + t,
            "rew": np.ones(3, np.float32),
            "terminated": np.array([t == 2, False, t == 4]),
            "truncated": np.zeros(3, bool),
        }
        ref, want = ref_add(ref, batch)
        sb, got = shd.shard_add(sb, batch, mesh, "env")
        for x, y in zip(got, want):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    key = jax.random.key(5)
    rows, idx = shd.shard_sample(sb, key, 7, mesh, "env")
    want_rows, want_idx = jax.jit(lambda b, k: b.sample(k, 7))(ref, jax.random.fold_in(key, 0))
    np.testing.assert_array_equal(np.asarray(idx), np.asarray(want_idx))
    np.testing.assert_array_equal(np.asarray(rows["act"]), np.asarray(want_rows["act"]))
    assert idx.sharding.spec == P("env")
    assert shd.buffer_sharding(sb, mesh, "env").storage["obs"].spec == P(None, "env")
    assert shd.buffer_sharding(sb, mesh, "env").counters.spec == P("env")


def test_process_rank_and_subbuffers_single_process():
    assert shd.process_rank() == (0, 1)
    mesh = jax.make_mesh((1,), ("env",), devices=jax.devices()[:1])
    np.testing.assert_array_equal(shd.process_subbuffers(6, mesh, "env"), np.arange(6))


def test_other_buffer_kinds_are_refused():
    mesh = jax.make_mesh((1,), ("env",), devices=jax.devices()[:1])
    with pytest.raises(TypeError, match="expected a ReplayBuffer/VectorReplayBuffer or a Prio"):
        shd.shard_buffer({"obs": np.zeros(3)}, mesh, "env")
