"""Training throughput of the CartPole examples (``examples/ppo_cartpole.py``,
``examples/dqn_cartpole.py``), in environment steps per second.

Each example's own hyper-parameters, with the number of iterations set to
``example_iterations`` and evaluation (and, for DQN, checkpoints and the warm-up without
updates) moved past the end of the run, so that only training is timed: PPO's rollout of 16
envs x 128 steps, GAE and 4 epochs of minibatch updates per iteration; DQN's step of 16 envs,
add, and 8 prioritized n-step updates per iteration. The whole run is one compiled program
(compile time reported apart). The examples need gymnax (``pip install jaxbuf[examples]``);
flashbax has no port of them, so these rows have no peer.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import jax

from benchmarks import peers
from benchmarks.harness import Case, compile_jit, unavailable

UNIT = "us per env step"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NO_PORT = "flashbax has no port of this example"


def _import(name: str):
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    return __import__(name)


def _ppo(n: int) -> Case:
    ppo = _import("ppo_cartpole")
    cfg = dataclasses.replace(ppo.Config(), iterations=n, eval_every=n + 1)
    env = ppo.VecEnv("CartPole-v1", cfg.num_envs)
    train, _ = ppo.make_train(cfg, env, None)
    key = jax.random.key(0)
    compiled, secs = compile_jit(train, key)
    steps = n * cfg.env_steps_per_iteration
    params = {"iterations": n, "envs": cfg.num_envs, "steps_per_iteration": cfg.num_steps}
    chunk = lambda: jax.block_until_ready(compiled(key))
    return Case("examples/ppo", params, "jaxbuf", chunk, steps, UNIT, secs)


def _dqn(n: int) -> Case:
    dqn = _import("dqn_cartpole")
    cfg = dataclasses.replace(
        dqn.Config(), iterations=n, learning_starts=0, eval_every=n + 1, ckpt_every=n + 1
    )
    env = dqn.VecEnv("CartPole-v1", cfg.num_envs)
    agent = dqn.make_agent(cfg, env, None, lambda carry: None)
    carry = jax.block_until_ready(agent.init(jax.random.key(0)))
    compiled, secs = compile_jit(lambda c: agent.run(c, n), carry)
    params = {"iterations": n, "envs": cfg.num_envs, "updates": cfg.updates_per_iteration}
    chunk = lambda: jax.block_until_ready(compiled(carry))
    return Case(
        "examples/dqn", params, "jaxbuf", chunk, n * cfg.env_steps_per_iteration, UNIT, secs
    )


def groups(cfg):
    """One group: PPO and DQN."""
    n = cfg.example_iterations
    gym, why = peers.module("gymnax")
    if gym is None:
        yield [
            unavailable(w, {"iterations": n}, "jaxbuf", UNIT, why)
            for w in ("examples/ppo", "examples/dqn")
        ]
        return
    out: list = []
    for case in (_ppo(n), _dqn(n)):
        out += [case, unavailable(case.workload, case.params, "flashbax", UNIT, NO_PORT)]
    yield out
