"""RateLimitedBuffer.wait_until: fixed insert/sample interleavings reproduce exactly.

Actor threads take turns (turn ``t`` waits until every earlier turn is inserted and the
learner has drawn every batch the limiter allows); whatever the threads' timing, the learner
then sees the same rows as a single-threaded program running the same schedule.
"""

from __future__ import annotations

import random
import threading
import time

import jax.numpy as jnp
import numpy as np
import pytest

import jaxbuf
from jaxbuf.concurrent import (
    BufferClosedError,
    MinSize,
    RateLimitedBuffer,
    RateLimiterTimeout,
    SampleToInsertRatio,
)
from jaxbuf.errors import InputError

EX = {
    "obs": jnp.zeros(2, jnp.float32),
    "act": jnp.int32(0),
    "rew": jnp.float32(0),
    "terminated": jnp.bool_(False),
    "truncated": jnp.bool_(False),
    "uid": jnp.int32(0),
}
ACTORS, K, STEPS, B, SPI, MIN = 3, 2, 12, 4, 2.0, 6
JOIN_S = 20.0


def rows(actor: int, step: int) -> dict:
    uids = np.array([actor * 1000 + step * 10 + e for e in range(K)], np.int32)
    return {
        "obs": np.stack([uids, -uids], 1).astype(np.float32),
        "act": np.zeros(K, np.int32),
        "rew": np.ones(K, np.float32),
        "terminated": (uids % 7 == 6),
        "truncated": np.zeros(K, bool),
        "uid": uids,
    }


def make() -> RateLimitedBuffer:
    buf = jaxbuf.VectorReplayBuffer.create(EX, 8 * ACTORS * K, ACTORS * K)
    band = max((K * SPI + B) / 2, (K - 1) * SPI, float(B))
    return RateLimitedBuffer(buf, SampleToInsertRatio(SPI, MIN, band), seed=3)


def ids(actor: int) -> np.ndarray:
    return np.arange(actor * K, (actor + 1) * K, dtype=np.int32)


def turn_ready(turn: int):
    return lambda lim: lim.inserts >= turn * K and not lim.can_sample(B)


def reference() -> list[list[int]]:
    """The schedule run by one thread: turn after turn, then every allowed sample."""
    rb, seen = make(), []
    for step in range(STEPS):
        for a in range(ACTORS):
            rb.insert(rows(a, step), ids(a))
            while rb.limiter.can_sample(B):
                seen.append(np.asarray(rb.sample(B)[0]["uid"]).tolist())
    return seen


def threaded(jitter_seed: int) -> list[list[int]]:
    rb, seen, errors = make(), [], []
    rng = random.Random(jitter_seed)
    delays = [[rng.uniform(0, 0.004) for _ in range(STEPS)] for _ in range(ACTORS + 1)]

    def actor(a: int) -> None:
        for step in range(STEPS):
            time.sleep(delays[a][step])  # "stepping the environment"
            rb.wait_until(turn_ready(step * ACTORS + a), timeout=JOIN_S)
            rb.insert(rows(a, step), ids(a), timeout=JOIN_S)

    def learner() -> None:
        n = 0
        while True:
            try:
                batch, _ = rb.sample(B, timeout=JOIN_S)
            except BufferClosedError:
                return
            seen.append(np.asarray(batch["uid"]).tolist())
            time.sleep(delays[ACTORS][n % STEPS] / 4)
            n += 1

    def guarded(fn, *a):
        def run():
            try:
                fn(*a)
            except BaseException as err:
                errors.append(err)
                rb.close()

        return run

    threads = [threading.Thread(target=guarded(actor, a)) for a in range(ACTORS)]
    threads.append(threading.Thread(target=guarded(learner)))
    for t in threads:
        t.start()
    for t in threads[:-1]:
        t.join(JOIN_S)
    # Let the learner draw what the last insert allows, then stop it.
    rb.wait_until(lambda lim: not lim.can_sample(B), timeout=JOIN_S)
    rb.close()
    threads[-1].join(JOIN_S)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors
    return seen


def test_turns_reproduce_the_single_threaded_schedule_whatever_the_timing():
    expected = reference()
    n_expected = int((ACTORS * K * STEPS - MIN) * SPI) // B
    assert abs(len(expected) - n_expected) <= 1
    assert threaded(0) == expected
    assert threaded(1) == expected


def test_wait_until_returns_times_out_and_wakes_on_close():
    rb = RateLimitedBuffer(jaxbuf.ReplayBuffer.create(EX, 8), MinSize(1))
    with pytest.raises(RateLimiterTimeout):
        rb.wait_until(lambda lim: lim.inserts >= 1, timeout=0.05)
    got = []

    def waiter():
        got.append(rb.wait_until(lambda lim: lim.inserts >= 2, timeout=JOIN_S).inserts)

    t = threading.Thread(target=waiter)
    t.start()
    rb.insert({k: np.asarray(v) for k, v in EX.items()})
    time.sleep(0.05)
    assert not got  # one insert is not enough
    rb.insert({k: np.asarray(v) for k, v in EX.items()})
    t.join(JOIN_S)
    assert got == [2]

    errors = []

    def blocked():
        try:
            rb.wait_until(lambda lim: lim.samples >= 1, timeout=JOIN_S)
        except BufferClosedError as err:
            errors.append(err)

    t = threading.Thread(target=blocked)
    t.start()
    time.sleep(0.05)
    rb.close()
    t.join(JOIN_S)
    assert not t.is_alive() and len(errors) == 1
    with pytest.raises(InputError, match="predicate must be callable"):
        rb.wait_until(3)
    with pytest.raises(InputError, match="timeout"):
        rb.wait_until(lambda lim: True, timeout=-1)
