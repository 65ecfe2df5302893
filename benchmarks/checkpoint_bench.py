"""Save/restore timings of a full 2^20-slot buffer, and the async-save donation check.

    PYTHONPATH=. python benchmarks/checkpoint_bench.py [--log2-size 20] [--obs-dim 8]

Prints one JSON object: buffer bytes, on-disk bytes, seconds for ``jaxbuf.save`` (sync),
``jaxbuf.restore`` without and with ``like``, the manager's async ``save`` call and its
``wait``, and whether a jitted step donating the buffer really donated while an async save
of it was in flight and after ``wait``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxbuf
import jaxbuf.checkpoint as ckpt


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    jax.block_until_ready(out)
    return out, time.perf_counter() - start


def _disk_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--log2-size", type=int, default=20)
    parser.add_argument("--obs-dim", type=int, default=8)
    args = parser.parse_args()
    size = 1 << args.log2_size
    obs = np.zeros(args.obs_dim, np.float32)
    example = {
        "obs": obs,
        "obs_next": obs,
        "act": np.int32(0),
        "rew": np.float32(0),
        "terminated": False,
        "truncated": False,
    }
    buf = jaxbuf.ReplayBuffer.create(example, size)
    key = jax.random.key(0)
    # Fill every slot with distinct data (one big write, not a timing of add).
    storage = {
        k: jax.random.normal(key, v.shape).astype(v.dtype)
        if v.ndim > 2
        else jnp.arange(size).reshape(v.shape).astype(v.dtype)
        for k, v in buf.storage.items()
    }
    full = buf.episode_counters()._replace(
        lengths=jnp.full((1,), size, jnp.int32), last_slot=jnp.full((1,), size - 1, jnp.int32)
    )
    buf = buf.replace(storage=storage).with_counters(full)
    nbytes = sum(x.nbytes for x in jax.tree_util.tree_leaves(buf))
    root = tempfile.mkdtemp(prefix="jaxbuf-bench-")
    out: dict = {"slots": size, "buffer_bytes": nbytes, "backend": jax.default_backend()}
    try:
        _, out["save_s"] = _timed(lambda: ckpt.save(f"{root}/one", buf))
        out["disk_bytes"] = _disk_bytes(f"{root}/one")
        _, out["restore_s"] = _timed(lambda: ckpt.restore(f"{root}/one"))
        like = jax.eval_shape(lambda: buf)
        _, out["restore_like_s"] = _timed(lambda: ckpt.restore(f"{root}/one", like=like))

        step = jax.jit(lambda b: b.replace(counters=b.counters + 1), donate_argnums=0)
        with ckpt.checkpoint_manager(f"{root}/run") as mngr:
            start = time.perf_counter()
            mngr.save(1, buffer=buf)
            out["async_save_call_s"] = time.perf_counter() - start
            donor = buf.storage["obs"]
            buf = step(buf)
            out["donated_during_async_save"] = donor.is_deleted()
            start = time.perf_counter()
            mngr.wait()
            out["wait_s"] = time.perf_counter() - start
            donor = buf.storage["obs"]
            buf = step(buf)
            out["donated_after_wait"] = donor.is_deleted()
    finally:
        shutil.rmtree(root)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
