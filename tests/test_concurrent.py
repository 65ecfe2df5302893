"""jaxbuf.concurrent: RateLimitedBuffer with actor and learner threads.

Every thread is joined with a timeout and every test runs a fixed number of steps. Rows
carry a unique ``uid`` (actor * 100_000 + step) so lost or duplicated inserts are visible.
"""

from __future__ import annotations

import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbuf
from jaxbuf.concurrent import (
    BufferClosedError,
    MinSize,
    Queue,
    RateLimitedBuffer,
    RateLimiterTimeout,
    SampleToInsertRatio,
)
from jaxbuf.errors import ConfigError, InputError, JaxbufError

EX = {
    "obs": jnp.zeros(2, jnp.float32),
    "act": jnp.int32(0),
    "rew": jnp.float32(0),
    "terminated": jnp.bool_(False),
    "truncated": jnp.bool_(False),
    "uid": jnp.int32(0),
}
JOIN_S = 20.0


def rows(uids) -> dict:
    uids = np.asarray(uids, np.int32)
    k = len(uids)
    return {
        "obs": np.stack([uids, -uids], 1).astype(np.float32),
        "act": np.zeros(k, np.int32),
        "rew": np.ones(k, np.float32),
        "terminated": (uids % 7 == 6),
        "truncated": np.zeros(k, bool),
        "uid": uids,
    }


def run_threads(targets) -> list[BaseException]:
    """Start one thread per callable, join each with a timeout; return the errors raised."""
    errors: list[BaseException] = []

    def wrap(fn):
        def body():
            try:
                fn()
            except BaseException as err:  # collected and re-checked by the test
                errors.append(err)

        return body

    threads = [threading.Thread(target=wrap(fn), daemon=True) for fn in targets]
    for t in threads:
        t.start()
    deadline = time.monotonic() + JOIN_S
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    alive = [t for t in threads if t.is_alive()]
    assert not alive, f"{len(alive)} thread(s) still running after {JOIN_S} s"
    return errors


def stored_uids(buf) -> np.ndarray:
    return np.sort(np.asarray(buf.global_storage()["uid"])[np.asarray(buf.valid_mask())])


# ---------------------------------------------------------------------------- actors + learner
def test_actors_and_learner_keep_every_insert_and_the_ratio_band():
    n_actors, steps, k = 3, 40, 2
    spi, mss, err, batch = 2.0, 8, 16.0, 8
    limiter = SampleToInsertRatio(spi, mss, err)
    lo, hi = spi * mss - err, spi * mss + err
    buf = jaxbuf.VectorReplayBuffer.create(EX, 3 * 128, n_actors)
    rb = RateLimitedBuffer(buf, limiter, seed=1)
    total = n_actors * steps * k
    learner_steps = int(total * spi - hi) // batch + 1  # enough for every insert to pass
    diffs: list[tuple[int, float]] = []
    sampled: list[np.ndarray] = []

    def observe():
        s = rb.stats()
        diffs.append((s.size, s.diff))

    def actor(a):
        def run():
            for i in range(steps):
                rb.insert(rows(a * 100_000 + i * k + np.arange(k)), np.full(k, a), timeout=10)
                observe()

        return run

    def learner():
        for _ in range(learner_steps):
            batch_rows, idx = rb.sample(batch, timeout=10)
            sampled.append(np.asarray(batch_rows["uid"]))
            observe()

    errors = run_threads([actor(a) for a in range(n_actors)] + [learner])
    assert errors == []
    expected = np.sort([a * 100_000 + j for a in range(n_actors) for j in range(steps * k)])
    np.testing.assert_array_equal(stored_uids(rb.state), expected)  # none lost, none twice
    assert np.isin(np.concatenate(sampled), expected).all()
    s = rb.stats()
    assert (s.inserted_rows, s.insert_calls) == (total, n_actors * steps)
    assert (s.sampled_rows, s.sample_calls) == (learner_steps * batch, learner_steps)
    in_band = [lo <= d <= hi for size, d in diffs if size >= mss]
    assert len(in_band) >= len(diffs) - mss  # only the first few inserts precede min size
    assert all(in_band), [d for d in diffs if not lo <= d[1] <= hi]


def test_queue_yields_each_item_once_in_insertion_order():
    n_actors, steps = 3, 30
    rb = RateLimitedBuffer(jaxbuf.ReplayBuffer.create(EX, 32), Queue(16))
    got: list[np.ndarray] = []

    def actor(a):
        def run():
            for i in range(steps):
                rb.insert(rows([a * 100_000 + 2 * i, a * 100_000 + 2 * i + 1]), [0, 0], timeout=10)

        return run

    def learner():
        for _ in range(n_actors * steps * 2 // 4):
            got.append(np.asarray(rb.sample(4, timeout=10)[0]["uid"]))

    assert run_threads([actor(a) for a in range(n_actors)] + [learner]) == []
    uids = np.concatenate(got)
    expected = np.sort([a * 100_000 + j for a in range(n_actors) for j in range(2 * steps)])
    np.testing.assert_array_equal(np.sort(uids), expected)  # each exactly once
    for a in range(n_actors):  # each actor's rows come out in the order it inserted them
        mine = uids[uids // 100_000 == a]
        np.testing.assert_array_equal(mine, np.sort(mine))
    assert rb.stats().size == 0


def test_queue_pops_oldest_rows_across_wraparound():
    rb = RateLimitedBuffer(jaxbuf.ReplayBuffer.create(EX, 6), Queue(4))
    out = []
    for start in range(0, 40, 4):
        rb.insert(rows(range(start, start + 3)), [0, 0, 0])
        rb.insert(rows([start + 3]), [0])
        out.append(np.asarray(rb.sample(2)[0]["uid"]))
        out.append(np.asarray(rb.sample(2)[0]["uid"]))
    np.testing.assert_array_equal(np.concatenate(out), np.arange(40))
    with pytest.raises(RateLimiterTimeout):
        rb.sample(1, timeout=0)


def test_min_size_blocks_samples_until_enough_rows():
    rb = RateLimitedBuffer(jaxbuf.ReplayBuffer.create(EX, 16), MinSize(3))
    rb.insert(rows([0, 1]), [0, 0])
    with pytest.raises(RateLimiterTimeout):
        rb.sample(2, timeout=0.05)
    rb.insert(rows([2]), [0])
    batch, idx = rb.sample(5, timeout=0)
    assert np.isin(np.asarray(batch["uid"]), [0, 1, 2]).all() and idx.shape == (5,)
    for i in range(40):  # inserts never block
        rb.insert(rows([10 + i]), [0], timeout=0)


# ---------------------------------------------------------------------------- shutdown
def _blocked_inserter(rb, outcome):
    def run():
        try:
            rb.insert(rows([99]), [0])  # blocks: the queue is full
        except BufferClosedError as err:
            outcome.append(err)

    return run


def _blocked_sampler(rb, outcome):
    def run():
        try:
            rb.sample(4)  # blocks: fewer than 4 rows queued
        except BufferClosedError as err:
            outcome.append(err)

    return run


@pytest.mark.parametrize("waiting", ["none", "inserters", "samplers", "both"])
@pytest.mark.parametrize("closer", ["actor", "learner"])
def test_close_wakes_every_waiter(waiting, closer):
    # Two buffers: a full queue blocks inserts, an empty one blocks samples.
    full = RateLimitedBuffer(jaxbuf.ReplayBuffer.create(EX, 8), Queue(2))
    full.insert(rows([1, 2]), [0, 0])
    empty = RateLimitedBuffer(jaxbuf.ReplayBuffer.create(EX, 8), Queue(4))
    outcome: list = []
    waiters = []
    if waiting in ("inserters", "both"):
        waiters += [_blocked_inserter(full, outcome) for _ in range(2)]
    if waiting in ("samplers", "both"):
        waiters += [_blocked_sampler(empty, outcome) for _ in range(2)]

    def close_both():
        time.sleep(0.2)  # let the waiters block
        if closer == "actor":  # an actor gives up: it closes after a last insert try
            with pytest.raises(RateLimiterTimeout):
                full.insert(rows([7]), [0], timeout=0.01)
        else:
            with pytest.raises(RateLimiterTimeout):
                empty.sample(4, timeout=0.01)
        full.close()
        empty.close()

    assert run_threads([*waiters, close_both]) == []
    assert len(outcome) == len(waiters)
    assert all(isinstance(e, JaxbufError | RuntimeError) for e in outcome)
    for rb in (full, empty):
        with pytest.raises(BufferClosedError, match="closed"):
            rb.insert(rows([5]), [0], timeout=0)
        with pytest.raises(BufferClosedError):
            rb.sample(1)
        rb.close()  # idempotent
        assert rb.closed and rb.stats().closed
    assert len(full.state) == 2  # the state stays readable


@pytest.mark.parametrize("closer", ["actor", "learner", "main"])
def test_running_loops_stop_when_either_side_closes(closer):
    buf = jaxbuf.VectorReplayBuffer.create(EX, 64, 2)
    rb = RateLimitedBuffer(buf, SampleToInsertRatio(4, 4, 12))
    stop_at = 25

    def actor(a):
        def run():
            i = 0
            while True:
                try:
                    rb.insert(rows([a * 100_000 + i]), [a])
                except BufferClosedError:
                    return
                i += 1
                if closer == "actor" and a == 0 and i == stop_at:
                    rb.close()

        return run

    def learner():
        for step in range(10_000):
            try:
                rb.sample(2)
            except BufferClosedError:
                return
            if closer == "learner" and step == stop_at:
                rb.close()

    def main():
        if closer == "main":
            time.sleep(0.5)
            rb.close()

    assert run_threads([actor(0), actor(1), learner, main]) == []
    assert rb.closed and rb.stats().inserted_rows >= 4


# ---------------------------------------------------------------------------- timeouts
def test_timeouts_fire_and_are_counted():
    rb = RateLimitedBuffer(jaxbuf.ReplayBuffer.create(EX, 8), Queue(2))
    t0 = time.monotonic()
    with pytest.raises(RateLimiterTimeout, match="RateLimitedBuffer.sample"):
        rb.sample(1, timeout=0.2)
    assert 0.2 <= time.monotonic() - t0 < 5
    rb.insert(rows([1, 2]), [0, 0])
    with pytest.raises(TimeoutError):  # RateLimiterTimeout is also a TimeoutError
        rb.insert(rows([3]), [0], timeout=0.1)
    s = rb.stats()
    assert (s.sample_timeouts, s.insert_timeouts, s.inserted_rows) == (1, 1, 2)
    assert s.sample_blocked_s >= 0.2 and s.insert_blocked_s >= 0.1
    with pytest.raises(InputError, match="timeout"):
        rb.sample(1, timeout=-1)


# ---------------------------------------------------------------------------- misuse
def test_requests_that_could_deadlock_are_refused():
    rb = RateLimitedBuffer(jaxbuf.ReplayBuffer.create(EX, 64), SampleToInsertRatio(1.0, 2, 2.0))
    rb.insert(rows([0, 1]), [0, 0])
    with pytest.raises(InputError, match="blocked for ever"):
        rb.sample(8)
    q = RateLimitedBuffer(jaxbuf.ReplayBuffer.create(EX, 64), Queue(4))
    with pytest.raises(InputError, match="blocked for ever"):
        q.insert(rows(range(5)), [0] * 5)
    q.insert(rows(range(4)), [0] * 4)
    q.sample(1)  # 4 + 1 <= 4 + 1: fine
    with pytest.raises(InputError, match="blocked for ever"):
        q.sample(2)


def test_bad_configuration_and_input():
    small = jaxbuf.ReplayBuffer.create(EX, 8)
    with pytest.raises(ConfigError, match="min_size_to_sample"):
        RateLimitedBuffer(small, MinSize(9))
    with pytest.raises(ConfigError, match="smallest sub-buffer"):
        RateLimitedBuffer(jaxbuf.VectorReplayBuffer.create(EX, 16, 2), Queue(9))
    with pytest.raises(ConfigError, match="limiter"):
        RateLimitedBuffer(small, 3)
    with pytest.raises(ConfigError, match="error_buffer"):
        SampleToInsertRatio(1.0, 1, -1)
    with pytest.raises(ConfigError, match="max_size"):
        Queue(0)
    rb = RateLimitedBuffer(jaxbuf.VectorReplayBuffer.create(EX, 16, 2), MinSize(1))
    with pytest.raises(InputError, match=r"buffer_ids must lie in \[0, 2\)"):
        rb.insert(rows([1]), [2])
    with pytest.raises(InputError, match="batch_size"):
        rb.sample(0)
    with pytest.raises(InputError, match="update_weight: needs a prioritized buffer"):
        rb.update_weight(np.array([0]), np.array([1.0]))
    assert rb.stats().inserted_rows == 0


def test_prioritized_update_weight_changes_sampling():
    buf = jaxbuf.PrioritizedReplayBuffer.create(EX, 16, alpha=1.0, beta=0.5)
    rb = RateLimitedBuffer(buf, MinSize(4), seed=3)
    rb.insert(rows(range(4)), [0] * 4)
    batch, idx = rb.sample(8)
    assert "weight" in batch and idx.shape == (8,)
    rb.update_weight(np.arange(4), np.array([0.0, 0.0, 0.0, 100.0]))
    batch, idx = rb.sample(64)
    assert np.mean(np.asarray(batch["uid"]) == 3) > 0.9
    with pytest.raises(InputError, match="finite"):
        rb.update_weight(np.array([0]), np.array([np.nan]))
    with pytest.raises(InputError, match="shape"):
        rb.update_weight(np.array([0, 1]), np.array([1.0]))


def test_same_seed_same_samples_and_existing_rows_count():
    base, _ = jaxbuf.ReplayBuffer.create(EX, 32).add(rows(range(6)), np.zeros(6, np.int32))
    runs = []
    for _ in range(2):
        rb = RateLimitedBuffer(base, SampleToInsertRatio(1.0, 6, 16.0), seed=7)
        assert rb.stats().size == 6 and rb.limiter.inserts == 6
        runs.append([np.asarray(rb.sample(4, timeout=5)[1]) for _ in range(3)])
    np.testing.assert_array_equal(np.stack(runs[0]), np.stack(runs[1]))
    assert len(base) == 6  # the caller's buffer stays usable (it was copied, not donated)


def test_checkpoint_while_running(tmp_path):
    rb = RateLimitedBuffer(jaxbuf.VectorReplayBuffer.create(EX, 2 * 256, 2), MinSize(1))
    steps = 60
    saved = []

    def actor(a):
        def run():
            for i in range(steps):
                rb.insert(rows([a * 100_000 + i]), [a])

        return run

    def saver():
        for n in range(2):
            saved.append(jaxbuf.save(tmp_path / f"ck{n}", rb.state))

    assert run_threads([actor(0), actor(1), saver]) == []
    for n in range(2):
        restored = jaxbuf.restore(tmp_path / f"ck{n}")
        uids = stored_uids(restored)
        for a in range(2):  # a snapshot between two inserts: each actor's rows are a prefix
            mine = uids[uids // 100_000 == a] - a * 100_000
            np.testing.assert_array_equal(mine, np.arange(len(mine)))
    assert len(rb.state) == 2 * steps


def test_every_buffer_kind(filled):
    _, buf = filled
    rb = RateLimitedBuffer(buf, MinSize(1), seed=0)
    assert rb.stats().size == len(buf)
    batch, idx = rb.sample(4, timeout=5)
    ref, _ = buf.sample(jax.random.key(0), 4)
    assert set(batch) == set(ref) and idx.shape == (4,)
    rb.insert(buf.read(np.array([0, 1])), np.array([0, 1]), timeout=5)
    assert type(rb.state) is type(buf)
    s = rb.stats()
    assert (s.inserted_rows, s.size, len(rb.state)) == (2, len(buf) + 2, len(buf) + 2)
