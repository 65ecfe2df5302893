"""PPO on gymnax CartPole-v1 with the rollouts in a ``jaxbuf.VectorReplayBuffer``.

The whole run -- rollouts, GAE, minibatch epochs, periodic greedy evaluation -- is one
``jax.jit`` of a ``lax.scan`` over iterations. Each iteration:

1. steps ``num_envs`` vmapped environments for ``num_steps`` steps, adding every transition to
   a ``VectorReplayBuffer`` with one sub-buffer per environment and exactly ``num_steps``
   slots each, so every rollout overwrites the previous one. The policy's log-probability and
   value ride along in the ``policy`` field; ``obs_next`` is gymnax's
   ``info["final_observation"]``, the true successor even when the env auto-reset;
2. reads the rollout back as ``[num_envs, num_steps]`` arrays through ``buf.all_indices()``
   (chronological per sub-buffer) and computes advantages with ``jaxbuf.returns.gae``.
   Truncation: ``next_values = V(obs_next)`` for every step, so a step cut by the 500-step
   time limit bootstraps from the value of its real final observation while a terminated step
   does not bootstrap; both stop the GAE trace. A rollout that ends mid-episode is treated as
   truncated by ``gae`` (its last step bootstraps from ``next_values``);
3. runs ``epochs`` passes of clipped-surrogate updates over minibatches from
   ``buf.epoch_indices`` (every stored transition once per epoch, shuffled).

Run ``python examples/ppo_cartpole.py`` (full run) or ``--smoke`` (a few iterations).
Status lines (what is compiling, how long each phase took) go to stderr.
"""

# ruff: noqa: E402  (say what is happening before the slow imports)
from __future__ import annotations

from _status import phase, say

say("importing jax, flax, optax and gymnax (a few seconds)...")

import dataclasses
from pathlib import Path
from typing import Any, NamedTuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from _common import Progress, Stopwatch, VecEnv, base_parser, report, with_overrides

import jaxbuf


@dataclasses.dataclass(frozen=True)
class Config:
    """Hyper-parameters; ``num_envs * num_steps`` must be a multiple of ``minibatch_size``."""

    num_envs: int = 16
    num_steps: int = 128
    iterations: int = 150
    epochs: int = 4
    minibatch_size: int = 512
    lr: float = 2.5e-3
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip: float = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    eval_every: int = 10
    eval_episodes: int = 32
    final_eval_episodes: int = 128

    def __post_init__(self):
        rollout = self.num_envs * self.num_steps
        if rollout % self.minibatch_size:
            raise ValueError(
                f"num_envs * num_steps ({rollout}) must be a multiple of minibatch_size "
                f"({self.minibatch_size})"
            )

    @property
    def env_steps_per_iteration(self) -> int:
        return self.num_envs * self.num_steps


SMOKE = Config(
    num_steps=16,
    iterations=3,
    minibatch_size=128,
    eval_every=2,
    eval_episodes=4,
    final_eval_episodes=4,
)


class ActorCritic(nn.Module):
    """Separate 64-64 tanh towers: ``obs [..., 4] -> (logits [..., A], value [...])``."""

    num_actions: int

    @nn.compact
    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        def tower(x, out, scale):
            for _ in range(2):
                x = nn.tanh(nn.Dense(64, kernel_init=nn.initializers.orthogonal(np.sqrt(2)))(x))
            return nn.Dense(out, kernel_init=nn.initializers.orthogonal(scale))(x)

        logits = tower(obs, self.num_actions, 0.01)
        value = tower(obs, 1, 1.0)[..., 0]
        return logits, value


class Carry(NamedTuple):
    """State carried across iterations; ``train_return`` / ``eval_return`` are the latest
    values shown on the progress bar."""

    params: Any
    opt_state: Any
    buf: jaxbuf.VectorReplayBuffer
    env_state: Any
    obs: jax.Array
    train_return: jax.Array
    eval_return: jax.Array


def make_train(cfg: Config, env: VecEnv, progress: Progress | None):
    """``(train, evaluate)``, both jitted: ``train(key) -> (params, metrics)`` is the whole
    run; ``evaluate(params, key, episodes)`` the mean greedy return (``episodes`` static).

    ``metrics``: ``train_return [iterations]`` (mean return of the training episodes that
    finished in the iteration, NaN if none did) and ``eval_return [iterations]`` (greedy
    evaluation, NaN in iterations without one).
    """
    net = ActorCritic(env.num_actions)
    grad_steps = cfg.iterations * cfg.epochs * (cfg.env_steps_per_iteration // cfg.minibatch_size)
    tx = optax.chain(
        optax.clip_by_global_norm(cfg.max_grad_norm),
        optax.adam(optax.linear_schedule(cfg.lr, 0.0, grad_steps), eps=1e-5),
    )
    example = {  # one transition, no batch axis
        "obs": jnp.zeros(env.obs_shape, jnp.float32),
        "act": jnp.zeros((), jnp.int32),
        "rew": jnp.zeros((), jnp.float32),
        "terminated": jnp.zeros((), bool),
        "truncated": jnp.zeros((), bool),
        "obs_next": jnp.zeros(env.obs_shape, jnp.float32),
        "policy": {"logp": jnp.zeros((), jnp.float32), "value": jnp.zeros((), jnp.float32)},
    }

    def greedy(params):
        return lambda obs: jnp.argmax(net.apply(params, obs)[0], axis=-1)

    def rollout(carry: Carry, key: chex.PRNGKey):
        def step(c, k):
            params, buf, env_state, obs = c
            k_act, k_env = jax.random.split(k)
            logits, value = net.apply(params, obs)
            act = jax.random.categorical(k_act, logits)
            logp = jnp.take_along_axis(jax.nn.log_softmax(logits), act[:, None], -1)[:, 0]
            s = env.step(k_env, env_state, act)
            buf, res = buf.add(
                {
                    "obs": obs,
                    "act": act,
                    "rew": s.rew,
                    "terminated": s.terminated,
                    "truncated": s.truncated,
                    "obs_next": s.obs_next,
                    "policy": {"logp": logp, "value": value},
                }
            )
            ended = s.terminated | s.truncated
            return (params, buf, s.state, s.obs), (res.episode_return, ended)

        init = (carry.params, carry.buf, carry.env_state, carry.obs)
        (_, buf, env_state, obs), (ep_ret, ended) = jax.lax.scan(
            step, init, jax.random.split(key, cfg.num_steps)
        )
        finished = jnp.sum(ended)
        mean_ret = jnp.where(
            finished > 0, jnp.sum(ep_ret * ended) / jnp.maximum(finished, 1), jnp.nan
        )
        return buf, env_state, obs, mean_ret

    def advantages(params, buf: jaxbuf.VectorReplayBuffer):
        """GAE over the rollout; returns ``(adv, ret)`` indexed by global buffer slot."""
        idx, _ = buf.all_indices()  # the buffer is full: every slot valid, oldest first
        idx = idx.reshape(cfg.num_envs, cfg.num_steps)
        batch = buf[idx]
        next_value = net.apply(params, batch["obs_next"])[1]
        adv, ret = jaxbuf.returns.gae(
            batch["rew"],
            batch["policy"]["value"],
            next_value,
            batch["terminated"],
            batch["truncated"],
            cfg.gamma,
            cfg.gae_lambda,
            time_major=False,
        )
        by_slot = lambda x: jnp.zeros(buf.maxsize).at[idx.ravel()].set(x.ravel())
        return by_slot(adv), by_slot(ret)

    def loss_fn(params, mb, adv, ret, mask):
        logits, value = net.apply(params, mb["obs"])
        logp_all = jax.nn.log_softmax(logits)
        logp = jnp.take_along_axis(logp_all, mb["act"][:, None], -1)[:, 0]
        w = mask / jnp.maximum(mask.sum(), 1)
        mean = lambda x: jnp.sum(w * x)
        adv = (adv - mean(adv)) / (jnp.sqrt(mean((adv - mean(adv)) ** 2)) + 1e-8)
        ratio = jnp.exp(logp - mb["policy"]["logp"])
        surrogate = jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - cfg.clip, 1 + cfg.clip) * adv)
        v_old = mb["policy"]["value"]
        v_clipped = v_old + jnp.clip(value - v_old, -cfg.clip, cfg.clip)
        v_loss = 0.5 * jnp.maximum((value - ret) ** 2, (v_clipped - ret) ** 2)
        entropy = -jnp.sum(jnp.exp(logp_all) * logp_all, -1)
        return mean(-surrogate + cfg.vf_coef * v_loss - cfg.ent_coef * entropy)

    def update(params, opt_state, buf, key):
        adv, ret = advantages(params, buf)

        def epoch(c, k):
            mb_idx, mb_mask = buf.epoch_indices(k, cfg.minibatch_size)

            def minibatch(c, xs):
                params, opt_state = c
                i, mask = xs
                i = jnp.maximum(i, 0)  # padding (-1) is masked out of the loss
                grads = jax.grad(loss_fn)(params, buf[i], adv[i], ret[i], mask)
                updates, opt_state = tx.update(grads, opt_state, params)
                return (optax.apply_updates(params, updates), opt_state), None

            return jax.lax.scan(minibatch, c, (mb_idx, mb_mask))[0], None

        (params, opt_state), _ = jax.lax.scan(
            epoch, (params, opt_state), jax.random.split(key, cfg.epochs)
        )
        return params, opt_state

    def iteration(carry: Carry, xs):
        it, key = xs
        k_roll, k_upd, k_eval = jax.random.split(key, 3)
        buf, env_state, obs, train_ret = rollout(carry, k_roll)
        params, opt_state = update(carry.params, carry.opt_state, buf, k_upd)
        do_eval = (it + 1) % cfg.eval_every == 0
        eval_ret = jax.lax.cond(
            do_eval,
            lambda: env.evaluate(greedy(params), k_eval, cfg.eval_episodes),
            lambda: jnp.float32(jnp.nan),
        )
        shown_train = jnp.where(jnp.isnan(train_ret), carry.train_return, train_ret)
        shown_eval = jnp.where(do_eval, eval_ret, carry.eval_return)
        if progress is not None:
            jax.debug.callback(
                progress.report, it, (it + 1) * cfg.env_steps_per_iteration, shown_train, shown_eval
            )
        new = Carry(params, opt_state, buf, env_state, obs, shown_train, shown_eval)
        return new, {"train_return": train_ret, "eval_return": eval_ret}

    def train(key: chex.PRNGKey):
        k_init, k_env, k_loop = jax.random.split(key, 3)
        obs, env_state = env.reset(k_env)
        params = net.init(k_init, obs)
        buf = jaxbuf.VectorReplayBuffer.create(example, cfg.env_steps_per_iteration, cfg.num_envs)
        nan = jnp.float32(jnp.nan)
        carry = Carry(params, tx.init(params), buf, env_state, obs, nan, nan)
        xs = (jnp.arange(cfg.iterations), jax.random.split(k_loop, cfg.iterations))
        carry, metrics = jax.lax.scan(iteration, carry, xs)
        return carry.params, metrics

    return jax.jit(train), jax.jit(
        lambda params, key, n: env.evaluate(greedy(params), key, n), static_argnums=2
    )


def main(argv: list[str] | None = None) -> dict:
    parser = base_parser(__doc__.splitlines()[0], "ppo_cartpole.png")
    args = parser.parse_args(argv)
    cfg = with_overrides(SMOKE if args.smoke else Config(), args.set)
    env = VecEnv("CartPole-v1", cfg.num_envs)
    progress = Progress(cfg.iterations, "PPO CartPole-v1")
    train, evaluate = make_train(cfg, env, progress)
    key = jax.random.key(args.seed)
    clock = Stopwatch()
    loop = f"{cfg.iterations} iterations of {cfg.num_envs} envs x {cfg.num_steps} steps"
    note = f"one jitted lax.scan of {loop}; about 10 s of CPU time"
    with phase("compiling the training loop", note):
        with clock.phase("compile"):
            compiled = train.lower(key).compile()
    with phase("training", loop):
        with clock.phase("train"):
            params, metrics = jax.block_until_ready(compiled(key))
        progress.close()
    with phase(f"final greedy evaluation of {cfg.final_eval_episodes} episodes", "compiles first"):
        final = float(evaluate(params, jax.random.fold_in(key, 1), cfg.final_eval_episodes))
    return report(
        Path(__file__).name,
        "PPO",
        "PPO on CartPole-v1 (jaxbuf VectorReplayBuffer + returns.gae)",
        args.out,
        cfg,
        np.asarray(metrics["train_return"]),
        np.asarray(metrics["eval_return"]),
        final,
        clock.times,
        argv,
    )


if __name__ == "__main__":
    main()
