"""Asynchronous DQN on gymnax CartPole-v1: actor threads and a learner thread at their own
pace, held to a fixed replay ratio by ``jaxbuf.concurrent``.

* ``num_actors`` actor threads each step ``envs_per_actor`` vmapped environments with a
  compiled epsilon-greedy policy on a recent copy of the learner's parameters, and
  ``insert`` each step's transitions into one shared
  :class:`jaxbuf.concurrent.RateLimitedBuffer` (a ``PrioritizedVectorReplayBuffer`` with
  one sub-buffer per environment, so episodes never interleave);
* each actor inserts, for every step, its ``n_step``-step return, the observation to
  bootstrap from and the discount (computed from the actor's last ``n_step`` steps, so the
  learner needs no access to the buffer's episode links); the learner thread
  ``sample``\\ s prioritized batches, makes double-DQN updates on those targets
  (importance-weighted Huber loss), writes the new priorities back (``update_weight``,
  absolute TD errors) and evaluates the greedy policy every ``eval_every`` updates;
* a ``SampleToInsertRatio`` limiter keeps ``samples_per_insert`` sampled rows per inserted
  row: when the learner falls behind the actors wait, when the actors fall behind the
  learner waits.

Two modes (``--set deterministic=false`` for the second):

* **deterministic** (default): the run is a function of the seed alone. The inserts take
  turns in a fixed order (actor 0's step ``j``, actor 1's step ``j``, ..., then step
  ``j + 1``), and turn ``t`` waits until every earlier turn is in and the learner has
  drawn every batch the limiter allows and written its priorities back
  (``RateLimitedBuffer.wait_until``), so each sample sees the same rows and priorities in
  every run. An actor that has made ``i`` inserts acts on the parameters after exactly the
  updates that the rows of the first ``i - param_lag`` turns of every actor allow (waiting
  for them if the learner is behind). Actors still step their environments while the
  learner trains; what is fixed is the order in which their rows meet its samples.
* **free-running**: no turns; actors act on whatever parameters the learner published
  last (every ``publish_every`` updates). The replay ratio still holds (within the band),
  but which rows a sample sees and which parameters an actor holds follow thread timing,
  so two runs with one seed differ. The deterministic mode waits a little more.

When the actors have stepped ``env_steps`` in total (and, deterministic, the learner has
drawn what the last rows allow) the main thread closes the buffer, which wakes the learner
with ``BufferClosedError`` and ends the run.

Run ``python examples/async_dqn_cartpole.py`` (a few minutes on two CPU cores), ``--smoke``
for a few seconds of a tiny configuration, ``--steps N`` for another budget.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import sys
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
    lr: float = 1e-3
    lr_end: float = 1e-5
    target_every: int = 128
    publish_every: int = 8
    eps_start: float = 1.0
    eps_end: float = 0.04
    eps_fraction: float = 0.16
    eval_every: int = 2_500
    eval_episodes: int = 32
    final_eval_episodes: int = 128
    n_step: int = 3  # actors insert n-step returns (1: plain one-step targets)
    alpha: float = 0.6  # prioritized replay (0: uniform)
    beta: float = 0.4
    deterministic: bool = True
    param_lag: int = 1  # deterministic: act on the updates of the turns before the last

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
    """What the threads share besides the buffer: the learner's parameters by update count
    (``publish`` / ``get``) and the training-episode and evaluation returns (for the curve)."""

    def __init__(self, params: Any, num_actors: int):
        self.lock = threading.Lock()
        self.published = threading.Condition(self.lock)
        self.versions: dict[int, Any] = {0: params}
        self.latest = 0
        self.requested = [0] * num_actors  # the oldest version each actor may still ask for
        self.episodes: list[tuple[int, int, float]] = []  # (env steps, actor, return)
        self.evals: list[tuple[int, float]] = []  # (env steps, return)
        self.stopped = False
        self.weighted = 0  # updates whose priorities the learner has written back

    def publish(self, n: int, params: Any) -> None:
        """The parameters after ``n`` updates; versions no actor can ask for are dropped."""
        with self.lock:
            self.versions[n] = params
            self.latest = n
            for old in [v for v in self.versions if v < min(self.requested) and v != n]:
                del self.versions[old]
            self.published.notify_all()

    def get(self, actor: int, n: int | None) -> Any:
        """The parameters after exactly ``n`` updates (waiting for them), or the latest."""
        with self.lock:
            if n is None:
                return self.versions[self.latest]
            self.requested[actor] = n
            while n not in self.versions:
                if self.stopped:
                    raise BufferClosedError("the run stopped before the parameters were published")
                self.published.wait(1.0)
            return self.versions[n]

    def mark_weighted(self, n: int) -> None:
        with self.lock:
            self.weighted = n
            self.published.notify_all()

    def wait_weighted(self, n: int) -> None:
        """Wait until the priorities of the first ``n`` batches are written back."""
        with self.lock:
            while self.weighted < n:
                if self.stopped:
                    raise BufferClosedError("the run stopped before the priorities were written")
                self.published.wait(1.0)

    def stop(self) -> None:
        with self.lock:
            self.stopped = True
            self.published.notify_all()


def updates_allowed(limiter: Any, rows: int, batch_size: int) -> int:
    """Batches of ``batch_size`` the limiter lets the learner draw once ``rows`` rows are in
    (and no earlier batch was refused): where a fixed-turn learner stands after them."""
    lim = dataclasses.replace(limiter, inserts=rows, samples=0, deletes=0)
    if lim.size < lim.min_size_to_sample:
        return 0
    n = max(0, int((lim.diff - lim.min_diff) // batch_size))
    while dataclasses.replace(lim, samples=(n + 1) * batch_size).diff >= lim.min_diff:
        n += 1  # guard against rounding in the division
    while n and dataclasses.replace(lim, samples=n * batch_size).diff < lim.min_diff:
        n -= 1
    return n


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
        """Importance-weighted Huber loss of the double-DQN n-step target
        ``ret + discount * Q_target(obs_next, argmax Q)``; aux: the TD errors."""
        q = jnp.take_along_axis(net.apply(params, batch["obs"]), batch["act"][:, None], -1)[:, 0]
        a_star = jnp.argmax(net.apply(params, batch["obs_next"]), -1)
        q_next = jnp.take_along_axis(net.apply(target, batch["obs_next"]), a_star[:, None], -1)
        y = batch["ret"] + batch["discount"] * q_next[:, 0]
        td = q - jax.lax.stop_gradient(y)
        return jnp.mean(batch["weight"] * optax.huber_loss(td)), td

    @jax.jit
    def update(params, target, opt_state, batch):
        grads, td = jax.grad(loss_fn, has_aux=True)(params, target, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, jnp.abs(td)

    @jax.jit
    def evaluate(params, key):
        return env.evaluate(lambda o: jnp.argmax(net.apply(params, o), -1), key, cfg.eval_episodes)

    return net, tx, act_step, update, evaluate


@functools.partial(jax.jit, static_argnums=1)
def nstep_row(window: list, gamma: float) -> dict:
    """The row to insert for the oldest step of ``window`` (1 to n consecutive steps).

    ``ret`` is the discounted reward sum up to the window's end or the step that ends the
    episode; ``obs_next`` the observation to bootstrap from (that step's true successor) and
    ``discount`` its factor: ``gamma ** m`` after ``m`` steps, 0 if the episode terminated
    (a truncated episode, or an unfinished window, bootstraps). The other fields are the
    oldest step's own, so the buffer's episode bookkeeping is unchanged.
    """
    first = window[0]
    ret = jnp.zeros_like(first["rew"])
    discount = jnp.ones_like(first["rew"])
    boot = first["obs_next"]
    alive = jnp.ones_like(first["terminated"])
    for row in window:
        ret = ret + jnp.where(alive, discount * row["rew"], 0.0)
        boot = jnp.where(alive[:, None], row["obs_next"], boot)
        discount = jnp.where(alive, jnp.where(row["terminated"], 0.0, discount * gamma), discount)
        alive = alive & ~(row["terminated"] | row["truncated"])
    return {**first, "obs_next": boot, "ret": ret, "discount": discount}


def actor(cfg, env, act_step, rb, shared, a: int, key) -> None:
    """Step this actor's envs until its share of ``env_steps``; insert every step."""
    ids = np.arange(a * cfg.envs_per_actor, (a + 1) * cfg.envs_per_actor, dtype=np.int32)
    k_reset, key = jax.random.split(key)
    obs, state = env.reset(k_reset, cfg.envs_per_actor)
    decay = max(1.0, cfg.eps_fraction * cfg.env_steps)
    start = rb.limiter
    window: list[dict] = []  # the last n_step steps, oldest first
    inserted = 0

    def insert(row: dict) -> None:
        nonlocal inserted
        if cfg.deterministic:  # wait for this insert's turn
            turn, b = (inserted * cfg.num_actors + a) * cfg.envs_per_actor, cfg.batch_size
            lim = rb.wait_until(lambda lim: lim.inserts >= turn and not lim.can_sample(b))
            shared.wait_weighted(lim.samples // b)  # the learner's last priorities are in
        result = rb.insert(row, ids)
        inserted += 1
        ended = np.asarray(row["terminated"] | row["truncated"])
        if ended.any():
            steps = inserted * cfg.num_envs  # when the episode ended (this row's step)
            with shared.lock:
                for r in np.asarray(result.episode_return)[ended]:
                    shared.episodes.append((steps, a, float(r)))

    for j in range(cfg.env_steps // cfg.num_envs):
        version = None
        if cfg.deterministic:  # the updates that this actor's previous insert allowed
            lagged = max(0, inserted - cfg.param_lag) * cfg.num_envs
            version = updates_allowed(start, lagged, cfg.batch_size)
        params = shared.get(a, version)
        eps = cfg.eps_start + min(1.0, j * cfg.num_envs / decay) * (cfg.eps_end - cfg.eps_start)
        key, k = jax.random.split(key)
        rows, state, obs = act_step(params, state, obs, k, jnp.float32(eps))
        window.append(rows)
        if len(window) == cfg.n_step:
            insert(nstep_row(window, cfg.gamma))
            window.pop(0)
    while window:  # the last steps: shorter windows, bootstrapping where they end
        insert(nstep_row(window, cfg.gamma))
        window.pop(0)


def learner(cfg, tx, update, evaluate, rb, shared, key) -> dict:
    """Sample and update until the buffer is closed; return the final parameters."""
    params = target = shared.versions[0]
    opt_state = tx.init(params)
    n = 0
    t0 = time.perf_counter()
    while True:
        try:
            batch, idx = rb.sample(cfg.batch_size)
        except BufferClosedError:
            return {"params": params, "updates": n}
        params, opt_state, td = update(params, target, opt_state, batch)
        n += 1
        try:
            rb.update_weight(idx, np.asarray(td))
        except BufferClosedError:
            return {"params": params, "updates": n}
        shared.mark_weighted(n)
        if n % cfg.target_every == 0:
            target = params
        if cfg.deterministic or n % cfg.publish_every == 0:
            shared.publish(n, params)
        if n % cfg.eval_every == 0:
            ret = float(evaluate(params, jax.random.fold_in(key, n)))
            # The env steps whose rows allowed n updates (the limiter's target ratio).
            steps = cfg.min_size_to_sample + round(n * cfg.batch_size / cfg.samples_per_insert)
            with shared.lock:
                shared.evals.append((steps, ret))
            print(
                f"update {n:,}/{cfg.updates:,}: eval {ret:6.1f}  env steps {steps:,}  "
                f"{rb.stats().samples_per_insert:.2f} samples/insert  "
                f"{time.perf_counter() - t0:.0f} s",
                flush=True,
            )


def compile_fns(cfg, env, buf, tx, act_step, update, evaluate, params, key):
    """Compile the actor step, the update and the evaluation ahead of time, saying so."""
    obs, state = env.reset(key, cfg.envs_per_actor)
    shapes, _ = jax.eval_shape(lambda b, k: b.sample(k, cfg.batch_size), buf, key)
    batch = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)
    out = []
    for name, fn, args in [
        ("the actor step", act_step, (params, state, obs, key, jnp.float32(0))),
        ("the learner update", update, (params, params, tx.init(params), batch)),
        ("the greedy evaluation", evaluate, (params, key)),
    ]:
        print(f"compiling {name}...", flush=True)
        out.append(fn.lower(*args).compile())
    return out


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
        "ret": jnp.zeros((), jnp.float32),
        "discount": jnp.zeros((), jnp.float32),
    }
    buf = jaxbuf.PrioritizedVectorReplayBuffer.create(
        example, cfg.buffer_size, cfg.num_envs, alpha=cfg.alpha, beta=cfg.beta
    )
    limiter = SampleToInsertRatio(cfg.samples_per_insert, cfg.min_size_to_sample, cfg.band)
    rb = RateLimitedBuffer(buf, limiter, seed=args.seed)
    params0 = net.init(k_net, jnp.zeros((1, *env.obs_shape)))
    shared = Shared(params0, cfg.num_actors)
    clock = Stopwatch()
    with clock.phase("compile"):
        act_step, update, evaluate = compile_fns(
            cfg, env, buf, tx, act_step, update, evaluate, params0, k_net
        )
    mode = "deterministic turns" if cfg.deterministic else "free-running"
    print(
        f"training ({mode}): {cfg.num_actors} actor threads x {cfg.envs_per_actor} envs, "
        f"{cfg.env_steps:,} env steps, {cfg.samples_per_insert:g} samples/insert "
        "(the buffer's add and sample compile on first use)",
        flush=True,
    )
    out: dict = {}
    errors: list[BaseException] = []

    def guarded(fn, *a):
        def run():
            try:
                fn(*a)
            except BaseException as err:
                errors.append(err)
                rb.close()  # the other side stops too instead of waiting for ever
                shared.stop()

        return run

    def run_learner():
        out.update(learner(cfg, tx, update, evaluate, rb, shared, k_learn))

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
        if cfg.deterministic:  # let the learner draw what the last rows allow
            with contextlib.suppress(BufferClosedError):  # closed: a thread failed
                rb.wait_until(lambda lim: not lim.can_sample(cfg.batch_size))
        rb.close()  # the actors are done: wake the learner
        learn.join()
    if errors:
        raise errors[0]
    stats = rb.stats()
    print(f"final greedy evaluation ({cfg.final_eval_episodes} episodes, compiling)...", flush=True)
    final_env = VecEnv("CartPole-v1", cfg.final_eval_episodes)
    final = float(
        final_env.evaluate(
            lambda o: jnp.argmax(net.apply(out["params"], o), -1),
            k_final,
            cfg.final_eval_episodes,
        )
    )
    ep = np.array(sorted(shared.episodes), np.float64).reshape(-1, 3)[:, [0, 2]]
    ev = np.array(shared.evals, np.float64).reshape(-1, 2)
    summary = {
        "algorithm": "async DQN",
        "final_eval_return": final,
        "final_eval_episodes": cfg.final_eval_episodes,
        "env_steps": stats.inserted_rows,
        "learner_updates": out["updates"],
        "observed_samples_per_insert": round(stats.samples_per_insert, 3),
        "insert_blocked_s": round(stats.insert_blocked_s, 1),
        "sample_blocked_s": round(stats.sample_blocked_s, 1),
        **clock.times,
        "config": dataclasses.asdict(cfg),
        "command": " ".join(["python", "examples/async_dqn_cartpole.py", *(argv or sys.argv[1:])]),
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
        f"after {summary['env_steps']:,} env steps and {out['updates']:,} updates "
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
