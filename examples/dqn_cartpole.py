"""DQN on gymnax CartPole-v1 with a prioritized vector replay buffer and n-step targets.

Development version: uniform VectorReplayBuffer and a local n-step computation.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from _common import (  # the examples/ folder
    Progress,
    VecEnv,
    base_parser,
    save_curve,
    with_overrides,
)

import jaxbuf.prioritized
import jaxbuf.returns


@dataclasses.dataclass(frozen=True)
class Config:
    """Hyper-parameters. One iteration = one step of every env + one gradient update."""

    num_envs: int = 16
    hidden: int = 256
    iterations: int = 3125
    updates_per_iteration: int = 8
    buffer_size: int = 50_000
    batch_size: int = 64
    n_step: int = 3
    gamma: float = 0.99
    lr: float = 2.3e-3
    lr_end: float = 2.3e-5
    alpha: float = 0.6
    beta0: float = 0.4
    learning_starts: int = 64
    target_every: int = 16
    eps_start: float = 1.0
    eps_end: float = 0.04
    eps_fraction: float = 0.16
    eval_every: int = 125
    eval_episodes: int = 32
    final_eval_episodes: int = 128

    @property
    def env_steps_per_iteration(self) -> int:
        return self.num_envs


SMOKE = Config(iterations=40, updates_per_iteration=2, buffer_size=2048, batch_size=32,
               learning_starts=8, target_every=10,
               eval_every=20, eval_episodes=4, final_eval_episodes=4)


class QNetwork(nn.Module):
    """``obs [..., 4] -> Q [..., A]``: a ReLU MLP with two hidden layers of ``hidden``."""

    num_actions: int
    hidden: int

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        x = nn.relu(nn.Dense(self.hidden)(obs))
        x = nn.relu(nn.Dense(self.hidden)(x))
        return nn.Dense(self.num_actions)(x)


class Carry(NamedTuple):
    params: Any
    target: Any
    opt_state: Any
    buf: Any
    env_state: Any
    obs: jax.Array
    key: jax.Array
    iteration: jax.Array
    train_curve: jax.Array
    eval_curve: jax.Array
    shown: jax.Array  # latest (train, eval) returns for the progress bar
    best_params: Any
    best_eval: jax.Array


def make_train(cfg: Config, env: VecEnv, progress: Progress | None):
    net = QNetwork(env.num_actions, cfg.hidden)
    schedule = optax.linear_schedule(cfg.lr, cfg.lr_end,
                                     cfg.iterations * cfg.updates_per_iteration)
    tx = optax.chain(optax.clip_by_global_norm(10.0), optax.adam(schedule))
    zeros = jnp.zeros
    example = {
        "obs": zeros(env.obs_shape, jnp.float32),
        "act": zeros((), jnp.int32),
        "rew": zeros((), jnp.float32),
        "terminated": zeros((), bool),
        "truncated": zeros((), bool),
        "obs_next": zeros(env.obs_shape, jnp.float32),
    }

    def greedy(params):
        return lambda obs: jnp.argmax(net.apply(params, obs), axis=-1)

    def init(key):
        k_net, k_env, key = jax.random.split(key, 3)
        obs, env_state = env.reset(k_env)
        params = net.init(k_net, obs)
        buf = jaxbuf.prioritized.PrioritizedVectorReplayBuffer.create(
            example, cfg.buffer_size, cfg.num_envs, alpha=cfg.alpha, beta=cfg.beta0)
        nan = jnp.full((cfg.iterations,), jnp.nan, jnp.float32)
        return Carry(params, params, tx.init(params), buf, env_state, obs,
                     jax.random.key_data(key), jnp.int32(0), nan, nan,
                     jnp.full((2,), jnp.nan, jnp.float32), params, jnp.float32(-jnp.inf))

    def loss_fn(params, target, batch, partial, disc, obs_boot):
        q = net.apply(params, batch["obs"])
        q_a = jnp.take_along_axis(q, batch["act"][:, None], -1)[:, 0]
        a_star = jnp.argmax(net.apply(params, obs_boot), -1)
        q_boot = jnp.take_along_axis(net.apply(target, obs_boot), a_star[:, None], -1)[:, 0]
        y = jax.lax.stop_gradient(partial + disc * q_boot)
        td = q_a - y
        return jnp.mean(batch["weight"] * optax.huber_loss(td)), td

    def learn(c: Carry, key):
        def one(c, k):
            return learn_one(c, k), None

        return jax.lax.scan(one, c, jax.random.split(key, cfg.updates_per_iteration))[0]

    def learn_one(c: Carry, key):
        batch, idx = c.buf.sample(key, cfg.batch_size)
        boot, partial, disc = jaxbuf.returns.nstep_targets(c.buf, idx, cfg.gamma, cfg.n_step)
        obs_boot = c.buf.get(boot, "obs_next")
        grads, td = jax.grad(loss_fn, has_aux=True)(c.params, c.target, batch, partial, disc,
                                                    obs_boot)
        updates, opt_state = tx.update(grads, c.opt_state, c.params)
        params = optax.apply_updates(c.params, updates)
        buf = c.buf.update_weight(idx, jnp.abs(td))
        return c._replace(params=params, opt_state=opt_state, buf=buf)

    def iteration(c: Carry, _):
        it = c.iteration
        key = jax.random.wrap_key_data(c.key)
        key, k_eps, k_rand, k_env, k_learn, k_eval = jax.random.split(key, 6)
        frac = jnp.clip(it / (cfg.eps_fraction * cfg.iterations), 0.0, 1.0)
        eps = cfg.eps_start + frac * (cfg.eps_end - cfg.eps_start)
        explore = jax.random.uniform(k_eps, (cfg.num_envs,)) < eps
        rand = jax.random.randint(k_rand, (cfg.num_envs,), 0, env.num_actions)
        act = jnp.where(explore, rand, greedy(c.params)(c.obs))
        s = env.step(k_env, c.env_state, act)
        buf, res = c.buf.add({"obs": c.obs, "act": act, "rew": s.rew,
                              "terminated": s.terminated, "truncated": s.truncated,
                              "obs_next": s.obs_next})
        ended = s.terminated | s.truncated
        n_end = jnp.sum(ended)
        train_ret = jnp.where(n_end > 0, jnp.sum(res.episode_return * ended)
                              / jnp.maximum(n_end, 1), jnp.nan)
        beta = cfg.beta0 + (1.0 - cfg.beta0) * it / cfg.iterations
        c = c._replace(buf=buf.set_beta(beta), env_state=s.state, obs=s.obs,
                       key=jax.random.key_data(key))
        c = jax.lax.cond(it >= cfg.learning_starts, learn, lambda c, k: c, c, k_learn)
        c = c._replace(target=jax.tree.map(
            lambda t, p: jnp.where(it % cfg.target_every == 0, p, t), c.target, c.params))
        do_eval = (it + 1) % cfg.eval_every == 0
        eval_ret = jax.lax.cond(
            do_eval, lambda: env.evaluate(greedy(c.params), k_eval, cfg.eval_episodes),
            lambda: jnp.float32(jnp.nan))
        shown = jnp.stack([jnp.where(jnp.isnan(train_ret), c.shown[0], train_ret),
                           jnp.where(do_eval, eval_ret, c.shown[1])])
        if progress is not None:
            jax.debug.callback(progress.report, it, (it + 1) * cfg.env_steps_per_iteration,
                               shown[0], shown[1])
        better = do_eval & (eval_ret >= c.best_eval)
        c = c._replace(best_params=jax.tree.map(lambda b, p: jnp.where(better, p, b),
                                                c.best_params, c.params),
                       best_eval=jnp.where(better, eval_ret, c.best_eval))
        c = c._replace(iteration=it + 1, train_curve=c.train_curve.at[it].set(train_ret),
                       eval_curve=c.eval_curve.at[it].set(eval_ret), shown=shown)
        return c, None

    def run(c: Carry, num: int):
        return jax.lax.scan(iteration, c, None, length=num)[0]

    evaluate = jax.jit(lambda params, key, n: env.evaluate(greedy(params), key, n),
                       static_argnums=2)
    return jax.jit(init), jax.jit(run, static_argnums=1), evaluate


def main(argv: list[str] | None = None) -> dict:
    parser = base_parser(__doc__.splitlines()[0], "dqn_cartpole.png")
    args = parser.parse_args(argv)
    cfg = with_overrides(SMOKE if args.smoke else Config(), args.set)
    env = VecEnv("CartPole-v1", cfg.num_envs)
    progress = Progress(cfg.iterations, "DQN CartPole-v1")
    init, run, evaluate = make_train(cfg, env, progress)
    key = jax.random.key(args.seed)
    start = time.perf_counter()
    carry = init(key)
    carry = jax.block_until_ready(run(carry, cfg.iterations))
    wall = time.perf_counter() - start
    progress.close()
    final = float(evaluate(carry.params, jax.random.fold_in(key, 1), cfg.final_eval_episodes))
    best = float(evaluate(carry.best_params, jax.random.fold_in(key, 1), cfg.final_eval_episodes))
    steps = (np.arange(cfg.iterations) + 1) * cfg.env_steps_per_iteration
    train_ret, eval_ret = np.asarray(carry.train_curve), np.asarray(carry.eval_curve)
    has_eval = ~np.isnan(eval_ret)
    reached = steps[has_eval & (eval_ret >= 475)]
    summary = {
        "algorithm": "DQN",
        "final_eval_return": final,
        "env_steps": int(steps[-1]),
        "first_eval_ge_475_at_env_steps": int(reached[0]) if len(reached) else None,
        "wall_time_s_including_compile": round(wall, 1),
        "config": dataclasses.asdict(cfg),
        "command": "python examples/dqn_cartpole.py " + " ".join(sys.argv[1:] if argv is None
                                                                 else argv),
    }
    save_curve(args.out, "DQN on CartPole-v1", steps, train_ret, steps[has_eval],
               eval_ret[has_eval], summary)
    print(f"final greedy evaluation: {final:.1f}; best snapshot {best:.1f}; {steps[-1]:,} env steps in {wall:.1f} s; "
          f"evals: {np.round(eval_ret[has_eval]).tolist()}")
    return summary


if __name__ == "__main__":
    main()
