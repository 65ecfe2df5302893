"""Property test: random add / sample / prev / next sequences against a pure-Python model.

The model keeps, per sub-buffer, the list of stored steps oldest to newest and derives every
answer from that list (no modular slot arithmetic), so it is an independent statement of the
semantics in tianshou-semantics.md sections 3-6 (with jaxbuf's E7 fix).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
from helpers import EXAMPLE
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import jaxbuf


@dataclass
class Step:
    slot: int  # global slot
    obs: float
    done: bool


@dataclass
class Sub:
    offset: int
    m: int
    steps: list = field(default_factory=list)  # oldest -> newest
    writes: int = 0
    ep_return: float = 0.0
    ep_len: int = 0
    ep_first_slot: int | None = None


class Model:
    def __init__(self, m: int, n: int):
        self.subs = [Sub(k * m, m) for k in range(n)]

    def add(self, k: int, obs: float, rew: float, done: bool):
        sub = self.subs[k]
        slot = sub.offset + sub.writes % sub.m
        sub.writes += 1
        sub.steps.append(Step(slot, obs, done))
        if len(sub.steps) > sub.m:
            sub.steps.pop(0)
        if sub.ep_len == 0:
            sub.ep_first_slot = slot
        sub.ep_return += rew
        sub.ep_len += 1
        stored = {s.slot for s in sub.steps[-sub.ep_len :]} if sub.ep_len <= sub.m else set()
        start = sub.ep_first_slot if sub.ep_first_slot in stored else sub.steps[0].slot
        out = (slot, sub.ep_return if done else 0.0, sub.ep_len if done else 0, start)
        if done:
            sub.ep_return, sub.ep_len = 0.0, 0
        return out

    def _where(self, slot):
        for sub in self.subs:
            for p, s in enumerate(sub.steps):
                if s.slot == slot:
                    return sub, p
        return None, None

    def prev(self, slot):
        sub, p = self._where(slot)
        if p == 0 or sub.steps[p - 1].done:
            return slot
        return sub.steps[p - 1].slot

    def next(self, slot):
        sub, p = self._where(slot)
        if p == len(sub.steps) - 1 or sub.steps[p].done:
            return slot
        return sub.steps[p + 1].slot

    def chronological(self):
        return [s.slot for sub in self.subs for s in sub.steps]

    def unfinished(self):
        return [sub.steps[-1].slot for sub in self.subs if sub.steps and not sub.steps[-1].done]

    def obs(self, slot):
        return self._where(slot)[0].steps[self._where(slot)[1]].obs


@jax.jit
def _add(buf, batch, ids):
    return buf.add(batch, ids)


@jax.jit
def _reads(buf, idx, key):
    return buf.prev(idx), buf.next(idx), buf.sample_indices(key, 16), buf[idx]["obs"]


class BufferMachine(RuleBasedStateMachine):
    @initialize(
        m=st.sampled_from([1, 3, 4]), n=st.sampled_from([1, 3]), stack=st.sampled_from([1, 3])
    )
    def setup(self, m, n, stack):
        self.buf = jaxbuf.VectorReplayBuffer.create(EXAMPLE, m * n, n, stack_num=stack)
        self.model = Model(m, n)
        self.counter = 0
        self.stack = stack

    @rule(
        ids=st.lists(st.integers(0, 2), min_size=1, max_size=4),
        dones=st.lists(st.booleans(), min_size=4, max_size=4),
        trunc=st.lists(st.booleans(), min_size=4, max_size=4),
    )
    def add(self, ids, dones, trunc):
        n = self.buf.buffer_num
        ids = [i % n for i in ids]
        k = len(ids)
        obs = np.arange(self.counter, self.counter + k, dtype=np.float32)
        rew = obs / 10
        self.counter += k
        term = np.array(dones[:k]) & ~np.array(trunc[:k])
        tr = np.array(trunc[:k])
        # Always 4 rows (one compiled shape): padding rows carry the out-of-range id n, which
        # the buffer documents as dropped.
        pad = 4 - k
        batch = {
            "obs": np.pad(obs, (0, pad)),
            "act": np.zeros(4, np.int32),
            "rew": np.pad(rew, (0, pad)).astype(np.float32),
            "terminated": np.pad(term, (0, pad)),
            "truncated": np.pad(tr, (0, pad)),
        }
        self.buf, res = _add(self.buf, batch, np.asarray(ids + [n] * pad, np.int32))
        assert np.asarray(res.index)[k:].tolist() == [-1] * pad
        for j, i in enumerate(ids):
            exp = self.model.add(i, float(obs[j]), float(rew[j]), bool(term[j] | tr[j]))
            got = (
                int(res.index[j]),
                float(res.episode_return[j]),
                int(res.episode_length[j]),
                int(res.episode_start[j]),
            )
            assert got[0] == exp[0] and got[2] == exp[2] and got[3] == exp[3], (got, exp)
            assert abs(got[1] - exp[1]) < 1e-4, (got, exp)

    @invariant()
    def links_and_order_match(self):
        if not hasattr(self, "buf"):
            return
        chrono = self.model.chronological()
        assert self.buf.chronological_indices().tolist() == chrono
        assert self.buf.unfinished_index_compact().tolist() == self.model.unfinished()
        assert len(self.buf) == len(chrono)
        if not chrono:
            return
        idx = jnp.asarray(chrono, jnp.int32)
        prev, nxt, sampled, obs = _reads(self.buf, idx, jax.random.key(self.counter))
        assert prev.tolist() == [self.model.prev(s) for s in chrono]
        assert nxt.tolist() == [self.model.next(s) for s in chrono]
        assert set(sampled.tolist()) <= set(chrono)
        for s, row in zip(chrono, np.asarray(obs).reshape(len(chrono), -1)):
            frames = [s]
            for _ in range(self.stack - 1):
                frames.insert(0, self.model.prev(frames[0]))
            assert row.tolist() == [self.model.obs(f) for f in frames]


BufferMachine.TestCase.settings = settings(max_examples=30, stateful_step_count=12, deadline=None)
TestBufferModel = BufferMachine.TestCase
