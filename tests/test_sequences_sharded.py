"""sample_sequences on a buffer sharded over 4 local CPU devices, shard by shard.

The device count is fixed when jax starts, so the checks run in ``_sequences_sharded.py``
in a subprocess with ``--xla_force_host_platform_device_count=4``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def test_shard_local_windows_match_per_shard_buffers():
    path = os.pathsep.join(
        p for p in (str(TESTS.parent), str(TESTS), os.environ.get("PYTHONPATH")) if p
    )
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": path,
    }
    proc = subprocess.run(
        [sys.executable, str(TESTS / "_sequences_sharded.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "ok: shard-local sample_sequences on 4 devices" in proc.stdout
