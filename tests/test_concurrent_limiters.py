"""The limiters of jaxbuf.concurrent as pure state machines, against small reference models.

Each model restates its limiter's rule in its own terms (a list for the queue, exact
fractions and "samples owed" for the ratio) and is driven by the same random sequence of
requests; every answer of ``can_insert``/``can_sample`` must agree, and a request is applied
only when allowed, as the buffer does.
"""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxbuf.concurrent import MinSize, Queue, SampleToInsertRatio
from jaxbuf.errors import InputError

OPS = st.lists(
    st.tuples(st.sampled_from(["insert", "sample"]), st.integers(1, 6)), min_size=1, max_size=60
)
# Dyadic ratios and buffers keep float arithmetic exact, so boundaries compare exactly.
RATIOS = st.sampled_from([0.25, 0.5, 1.0, 1.5, 2.0, 4.0, 8.0])


class QueueModel:
    def __init__(self, n):
        self.n, self.items, self.next = n, [], 0

    def can_insert(self, k):
        return len(self.items) + k <= self.n

    def can_sample(self, b):
        return len(self.items) >= b

    def insert(self, k):
        self.items += list(range(self.next, self.next + k))
        self.next += k

    def sample(self, b):
        out, self.items = self.items[:b], self.items[b:]
        return out


class RatioModel:
    """Samples owed to the learner: ``spi * (inserted - min_size) - sampled``, kept within
    ``error`` of zero; before ``min_size`` rows nothing is sampled and inserts pass."""

    def __init__(self, spi, min_size, error, capacity):
        self.spi, self.m, self.err, self.cap = Fraction(spi), min_size, Fraction(error), capacity
        self.inserted = self.sampled = 0

    def owed(self, extra_inserts=0, extra_samples=0):
        inserted, sampled = self.inserted + extra_inserts, self.sampled + extra_samples
        return self.spi * (inserted - self.m) - sampled

    def stored(self):
        return min(self.inserted, self.cap)

    def can_insert(self, k):
        return self.stored() + k <= self.m or self.owed(extra_inserts=k) <= self.err

    def can_sample(self, b):
        return self.stored() >= self.m and self.owed(extra_samples=b) >= -self.err

    def insert(self, k):
        self.inserted += k

    def sample(self, b):
        self.sampled += b


def drive(limiter, model, ops, capacity=None):
    """Apply ``ops`` to both; return the limiter; check every answer on the way."""
    size = 0
    for op, n in ops:
        assert limiter.can_insert(n) == model.can_insert(n), (op, n, limiter)
        assert limiter.can_sample(n) == model.can_sample(n), (op, n, limiter)
        if op == "insert" and model.can_insert(n):
            model.insert(n)
            limiter = limiter.on_insert(n)
            if capacity is not None:  # the owner reports overwritten rows as deletes
                limiter = limiter.on_delete(max(0, size + n - capacity))
                size = min(size + n, capacity)
        elif op == "sample" and model.can_sample(n):
            model.sample(n)
            limiter = limiter.on_sample(n)
    return limiter


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 10), OPS)
def test_queue_matches_a_list(n, ops):
    model = QueueModel(n)
    limiter = drive(Queue(n), model, ops)
    assert limiter.size == len(model.items)
    assert limiter.pops_on_sample


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 12), st.integers(12, 30), OPS)
def test_min_size_matches_a_counter(m, capacity, ops):
    class Model:
        stored = 0

        def can_insert(self, k):
            return True

        def can_sample(self, b):
            return self.stored >= m

        def insert(self, k):
            self.stored = min(self.stored + k, capacity)

        def sample(self, b):
            pass

    model = Model()
    limiter = drive(MinSize(m), model, ops, capacity)
    assert limiter.size == model.stored


@settings(max_examples=300, deadline=None)
@given(RATIOS, st.integers(1, 8), st.sampled_from([0, 0.5, 1, 2, 3, 6, 10, 24]), OPS)
def test_sample_to_insert_ratio_matches_samples_owed(spi, m, error, ops):
    capacity = 64
    model = RatioModel(spi, m, error, capacity)
    limiter = SampleToInsertRatio(spi, m, error)
    seen_min = False
    for i in range(len(ops)):
        limiter = drive(limiter, model, ops[i : i + 1], capacity)
        seen_min |= model.stored() >= m
        if seen_min:  # the band holds at every step once min size was reached
            assert abs(model.owed()) <= model.err
            assert limiter.min_diff <= limiter.diff <= limiter.max_diff


def reachable_deadlock(limiter, k, b, capacity, max_inserts=36):
    """A state reachable with inserts of up to ``k`` rows and samples of up to ``b`` where
    an insert of ``k`` and a sample of ``b`` both block, or None (breadth-first over
    (inserts, samples), up to ``max_inserts`` rows inserted and as many samples as the
    band allows for them)."""
    width = limiter.max_diff - limiter.min_diff
    slack = width if math.isfinite(width) else 0.0
    max_samples = int(max_inserts * limiter.samples_per_insert + slack) + b
    seen, frontier = set(), [limiter]
    while frontier:
        nxt = []
        for lim in frontier:
            key = (lim.inserts, lim.samples)
            if key in seen or lim.inserts > max_inserts or lim.samples > max_samples:
                continue
            seen.add(key)
            if not lim.can_insert(k) and not lim.can_sample(b):
                return lim
            for n in range(1, k + 1):  # smaller requests too (other actors, last batches)
                if lim.can_insert(n):
                    over = 0 if lim.pops_on_sample else max(0, lim.size + n - capacity)
                    nxt.append(lim.on_insert(n).on_delete(over))
            for n in range(1, b + 1):
                if lim.can_sample(n):
                    nxt.append(lim.on_sample(n))
        frontier = nxt
    return None


@settings(max_examples=80, deadline=None)
@given(
    st.sampled_from(["ratio", "queue", "min"]),
    RATIOS,
    st.integers(1, 6),
    st.sampled_from([0, 1, 2, 4, 6, 9, 16]),
    st.integers(1, 5),
    st.integers(1, 6),
)
def test_always_progresses_is_sound(kind, spi, m, error, k, b):
    capacity = 32
    if kind == "ratio":
        limiter = SampleToInsertRatio(spi, m, error)
    elif kind == "queue":
        limiter = Queue(m + 4)
    else:
        limiter = MinSize(m)
    if limiter.always_progresses(k, b):
        assert reachable_deadlock(limiter, k, b, capacity) is None
    elif kind == "queue":  # exact for the queue: the refusal names a real deadlock
        assert reachable_deadlock(limiter, k, b, capacity) is not None


def test_counts_must_be_positive():
    with pytest.raises(InputError, match="can_insert"):
        MinSize(1).can_insert(0)
    with pytest.raises(InputError, match="on_delete"):
        MinSize(1).on_delete(-1)
    with pytest.raises(InputError, match="on_sample"):
        Queue(2).on_sample(True)
