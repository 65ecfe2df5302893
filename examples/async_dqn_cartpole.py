"""Asynchronous DQN on gymnax CartPole-v1: actor threads and a learner thread at their own
pace, held to a fixed replay ratio by ``jaxbuf.concurrent``.

* ``num_actors`` actor threads each step ``envs_per_actor`` vmapped environments with a
  jitted epsilon-greedy policy on the most recent parameters the learner published, and
  ``insert`` each step's transitions into one shared
  :class:`jaxbuf.concurrent.RateLimitedBuffer` (a ``VectorReplayBuffer`` with one
  sub-buffer per environment, so episodes never interleave);
* the learner thread ``sample``\\ s batches and makes double-DQN updates (1-step targets,
  Huber loss), publishes its parameters every ``publish_every`` updates and evaluates the
  greedy policy every ``eval_every`` updates;
* a ``SampleToInsertRatio`` limiter keeps ``samples_per_insert`` sampled rows per inserted
  row: when the learner falls behind the actors wait, when the actors fall behind the
  learner waits. The replay ratio is that of a synchronous run whatever the machine speed;
  the thread interleaving is not, so two runs with one seed differ within noise.

When the actors have stepped ``env_steps`` in total the main thread closes the buffer,
which wakes the learner with ``BufferClosedError`` and ends the run.

Run ``python examples/async_dqn_cartpole.py`` (about two minutes on two CPU cores),
``--smoke`` for a few seconds of a tiny configuration, ``--steps N`` for another budget.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _common import Stopwatch, VecEnv, base_parser, save_curve, with_overrides  # examples/
from dqn_cartpole import QNetwork, params_checksum

import jaxbuf
from jaxbuf.concurrent import BufferClosedError, RateLimitedBuffer, SampleToInsertRatio


@dataclasses.dataclass(frozen=True)
class Config:
    """Hyper-parameters; ``samples_per_insert`` = sampled rows per inserted transition."""

    num_actors: int = 2
    envs_per_actor: int = 8
    env_steps: int = 50_000
    hidden: int = 256
    buffer_size: int = 50_000
    batch_size: int = 64
    samples_per_insert: float = 32.0
    min_size_to_sample: int = 1_000
    error_buffer: float = 0.0  # 0: the smallest band that never deadlocks
    gamma: float = 0.99
    lr: float = 2.3e-3
    lr_end: float = 2.3e-5
    target_every: int = 128
    publish_every: int = 8
    eps_start: float = 1.0
    eps_end: float = 0.04
    eps_fraction: float = 0.16
    eval_every: int = 2_500
    eval_episodes: int = 32
    final_eval_episodes: int = 128

    @property
    def num_envs(self) -> int:
        return self.num_actors * self.envs_per_actor

    @property
    def band(self) -> float:
        """``error_buffer``, or the smallest one with which neither side can block for ever."""
        k, spi, b = self.envs_per_actor, self.samples_per_insert, self.batch_size
        return self.error_buffer or max((k * spi + b) / 2, (k - 1) * spi, float(b))

    @property
    def updates(self) -> int:
        """Learner updates of a full run (the limiter allows this many, within the band)."""
        return int((self.env_steps - self.min_size_to_sample) * self.samples_per_insert) // (
            self.batch_size
        )


SMOKE = Config(
    env_steps=1_600,
    hidden=32,
    buffer_size=2_048,
    batch_size=16,
    samples_per_insert=2.0,
    min_size_to_sample=64,
    eval_every=40,
    eval_episodes=2,
    final_eval_episodes=2,
)


class Shared:
    """What the threads share besides the buffer: the published parameters, the env-step
    count (for epsilon) and the training-episode returns (for the curve)."""

    def __init__(self, params: Any):
        self.lock = threading.Lock()
        self.params = params
        self.env_steps = 0
        self.episodes: list[tuple[int, float]] = []  # (env steps, return)
        self.evals: list[tuple[int, float]] = []


def make_fns(cfg: Config, env: VecEnv):
    net = QNetwork(env.num_actions, cfg.hidden)
    tx = optax.chain(
        optax.clip_by_global_norm(10.0),
        optax.adam(optax.linear_schedule(cfg.lr, cfg.lr_end, max(1, cfg.updates))),
    )

    @jax.jit
    def act_step(params, env_state, obs, key, eps):
        k_eps, k_rand, k_env = jax.random.split(key, 3)
        n = obs.shape[0]
        greedy = jnp.argmax(net.apply(params, obs), axis=-1)
        rand = jax.random.randint(k_rand, (n,), 0, env.num_actions)
        action = jnp.where(jax.random.uniform(k_eps, (n,)) < eps, rand, greedy)
        s = env.step(k_env, env_state, action)
        rows = {
            "obs": obs,
            "act": action,
            "rew": s.rew,
            "terminated": s.terminated,
            "truncated": s.truncated,
            "obs_next": s.obs_next,
        }
        return rows, s.state, s.obs

    def loss_fn(params, target, batch):
        q = jnp.take_along_axis(net.apply(params, batch["obs"]), batch["act"][:, None], -1)[:, 0]
        a_star = jnp.argmax(net.apply(params, batch["obs_next"]), -1)
        q_next = jnp.take_along_axis(net.apply(target, batch["obs_next"]), a_star[:, None], -1)
        y = batch["rew"] + cfg.gamma * (1.0 - batch["terminated"]) * q_next[:, 0]
        return jnp.mean(optax.huber_loss(q - jax.lax.stop_gradient(y)))

    @jax.jit
    def update(params, target, opt_state, batch):
        grads = jax.grad(loss_fn)(params, target, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    @jax.jit
    def evaluate(params, key):
        return env.evaluate(lambda o: jnp.argmax(net.apply(params, o), -1), key, cfg.eval_episodes)

    return net, tx, act_step, update, evaluate


def actor(cfg, env, act_step, rb, shared, a: int, key) -> None:
    """Step this actor's envs until its share of ``env_steps``; insert every step."""
    ids = np.arange(a * cfg.envs_per_actor, (a + 1) * cfg.envs_per_actor, dtype=np.int32)
    k_reset, key = jax.random.split(key)
    obs, state = env.reset(k_reset, cfg.envs_per_actor)
    decay = max(1.0, cfg.eps_fraction * cfg.env_steps)
    for _ in range(cfg.env_steps // cfg.num_envs):
        with shared.lock:
            params, done_steps = shared.params, shared.env_steps
        eps = cfg.eps_start + min(1.0, done_steps / decay) * (cfg.eps_end - cfg.eps_start)
        key, k = jax.random.split(key)
        rows, state, obs = act_step(params, state, obs, k, eps)
        result = rb.insert(rows, ids)
        ended = np.asarray(rows["terminated"] | rows["truncated"])
        with shared.lock:
            shared.env_steps += cfg.envs_per_actor
            if ended.any():
                for r in np.asarray(result.episode_return)[ended]:
                    shared.episodes.append((shared.env_steps, float(r)))


def learner(cfg, tx, update, evaluate, rb, shared, key) -> dict:
    """Sample and update until the buffer is closed; return the final parameters."""
    params = target = shared.params
    opt_state = tx.init(params)
    n = 0
    while True:
        try:
            batch, _ = rb.sample(cfg.batch_size)
        except BufferClosedError:
            return {"params": params, "updates": n}
        params, opt_state = update(params, target, opt_state, batch)
        n += 1
        if n % cfg.target_every == 0:
            target = params
        if n % cfg.publish_every == 0:
            with shared.lock:
                shared.params = params
        if n % cfg.eval_every == 0:
            ret = float(evaluate(params, jax.random.fold_in(key, n)))
            with shared.lock:
                shared.evals.append((shared.env_steps, ret))
                print(
                    f"update {n}: eval {ret:6.1f}  env steps {shared.env_steps:,}  "
                    f"{rb.stats().samples_per_insert:.2f} samples/insert",
                    flush=True,
                )


def main(argv: list[str] | None = None) -> dict:
    parser = base_parser(__doc__.splitlines()[0], "async_dqn_cartpole.png")
    parser.add_argument("--steps", type=int, default=None, help="total env steps (overrides)")
    args = parser.parse_args(argv)
    cfg = with_overrides(SMOKE if args.smoke else Config(), args.set)
    if args.steps is not None:
        cfg = dataclasses.replace(cfg, env_steps=args.steps)
    env = VecEnv("CartPole-v1", cfg.envs_per_actor)
    net, tx, act_step, update, evaluate = make_fns(cfg, env)
    key = jax.random.key(args.seed)
    k_net, k_actors, k_learn, k_final = jax.random.split(key, 4)
    example = {
        "obs": jnp.zeros(env.obs_shape, jnp.float32),
        "act": jnp.zeros((), jnp.int32),
        "rew": jnp.zeros((), jnp.float32),
        "terminated": jnp.zeros((), bool),
        "truncated": jnp.zeros((), bool),
        "obs_next": jnp.zeros(env.obs_shape, jnp.float32),
    }
    buf = jaxbuf.VectorReplayBuffer.create(example, cfg.buffer_size, cfg.num_envs)
    limiter = SampleToInsertRatio(cfg.samples_per_insert, cfg.min_size_to_sample, cfg.band)
    rb = RateLimitedBuffer(buf, limiter, seed=args.seed)
    shared = Shared(net.init(k_net, jnp.zeros((1, *env.obs_shape))))
    out: dict = {}
    errors: list[BaseException] = []

    def guarded(fn, *a):
        def run():
            try:
                fn(*a)
            except BaseException as err:
                errors.append(err)
                rb.close()  # the other side stops too instead of waiting for ever

        return run

    def run_learner():
        out.update(learner(cfg, tx, update, evaluate, rb, shared, k_learn))

    clock = Stopwatch()
    with clock.phase("train"):
        actors = [
            threading.Thread(
                target=guarded(
                    actor, cfg, env, act_step, rb, shared, a, jax.random.fold_in(k_actors, a)
                )
            )
            for a in range(cfg.num_actors)
        ]
        learn = threading.Thread(target=guarded(run_learner))
        for t in [*actors, learn]:
            t.start()
        for t in actors:
            t.join()
        rb.close()  # the actors are done: wake the learner
        learn.join()
    if errors:
        raise errors[0]
    stats = rb.stats()
    final_env = VecEnv("CartPole-v1", cfg.final_eval_episodes)
    final = float(
        final_env.evaluate(
            lambda o: jnp.argmax(net.apply(out["params"], o), -1),
            k_final,
            cfg.final_eval_episodes,
        )
    )
    ep = np.array(shared.episodes, np.float64).reshape(-1, 2)
    ev = np.array(shared.evals, np.float64).reshape(-1, 2)
    summary = {
        "algorithm": "async DQN",
        "final_eval_return": final,
        "final_eval_episodes": cfg.final_eval_episodes,
        "env_steps": shared.env_steps,
        "learner_updates": out["updates"],
        "observed_samples_per_insert": round(stats.samples_per_insert, 3),
        "insert_blocked_s": round(stats.insert_blocked_s, 1),
        "sample_blocked_s": round(stats.sample_blocked_s, 1),
        **clock.times,
        "config": dataclasses.asdict(cfg),
        "params_checksum": params_checksum(out["params"]),
    }
    save_curve(
        args.out,
        "Asynchronous DQN on CartPole-v1 (jaxbuf.concurrent)",
        ep[:, 0],
        ep[:, 1],
        ev[:, 0],
        ev[:, 1],
        summary,
    )
    print(
        f"async DQN: greedy evaluation {final:.1f} (mean of {cfg.final_eval_episodes} episodes) "
        f"after {shared.env_steps:,} env steps and {out['updates']:,} updates "
        f"({stats.samples_per_insert:.2f} samples/insert, target {cfg.samples_per_insert}); "
        f"train {clock.times['train_wall_s']} s; actors blocked {stats.insert_blocked_s:.1f} s, "
        f"learner blocked {stats.sample_blocked_s:.1f} s; curve: {args.out}",
        flush=True,
    )
    return summary


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - t0:.1f} s")
