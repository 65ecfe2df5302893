"""Batches drawn from several buffers in exact proportions (offline + online data, RLPD-style).

``mix(key, sources, fractions, batch_size)`` takes exactly ``counts[i]`` rows from source
``i``, with ``counts`` from :func:`mix_counts`:

* the fractions are normalised to sum to 1 and each source's quota is
  ``q_i = fractions_i * batch_size``;
* every source first gets ``floor(q_i)`` rows; the ``batch_size - sum(floor(q))`` rows left
  go one each to the sources with the largest remainders ``q_i - floor(q_i)``
  (largest-remainder rounding), ties going to the source listed first.

So ``counts`` always sums to ``batch_size`` and each count is ``floor(q_i)`` or
``ceil(q_i)``; for ``fractions = (0.5, 0.5)`` and an odd batch the first source gets the
extra row.

Everything is jittable and the fractions may be traced (annealed inside ``jit`` or
``lax.scan``): shapes stay static because every source draws ``batch_size`` rows with its own
``sample`` and the output takes, at position ``p``, the ``p``-th draw of the source that owns
position ``p`` (positions ``[0, counts[0])`` belong to source 0, the next ``counts[1]`` to
source 1, and so on). A fixed subset of independent draws is itself a set of independent
draws, so each source keeps its own sampling law (uniform, or by priority). The cost is
``len(sources) * batch_size`` draws.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxbuf._core.checks import is_traced
from jaxbuf._core.validate import key_path_str
from jaxbuf.errors import InputError, message

__all__ = ["mix", "mix_counts"]

WEIGHT = "weight"
"""The importance-weight field of prioritized reads; other sources get 1.0 when mixed in."""


def _check_batch_size(batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
        raise InputError(message("mix", f"batch_size must be an int, got {batch_size!r}"))
    if batch_size < 1:
        raise InputError(message("mix", f"batch_size must be >= 1, got {batch_size}"))
    return int(batch_size)


def mix_counts(fractions: Any, batch_size: int) -> jax.Array:
    """int32[S]: rows per source for ``fractions`` (see the module docstring for the rule).

    Args:
      fractions: S non-negative numbers with a positive sum (normalised here), possibly
        traced. Concrete values are checked; traced negative values are treated as 0.
      batch_size: static total number of rows.

    Example:
      >>> mix_counts([0.5, 0.5], 5).tolist(), mix_counts([1, 1, 1], 256).tolist()
      ([3, 2], [86, 85, 85])
    """
    batch_size = _check_batch_size(batch_size)
    frac = jnp.asarray(fractions, jnp.float32)
    if frac.ndim != 1 or frac.shape[0] < 1:
        raise InputError(
            message("mix", f"fractions must be a 1-d sequence of S >= 1 numbers, got {frac.shape}")
        )
    if not is_traced(frac):
        values = np.asarray(frac)
        if not np.all(np.isfinite(values)) or np.any(values < 0) or values.sum() <= 0:
            raise InputError(
                message(
                    "mix",
                    "fractions must be finite, >= 0 and have a positive sum, got "
                    f"{values.tolist()}",
                )
            )
    frac = jnp.maximum(frac, 0.0)
    quota = frac / jnp.sum(frac) * batch_size
    floor = jnp.floor(quota)
    base = floor.astype(jnp.int32)
    left = batch_size - jnp.sum(base)
    remainder = quota - floor
    order = jnp.argsort(-remainder, stable=True)  # largest remainder first, ties by position
    rank = jnp.zeros_like(order).at[order].set(jnp.arange(order.shape[0], dtype=order.dtype))
    return (base + (rank < left).astype(jnp.int32)).astype(jnp.int32)


def _leaves(batch: dict) -> dict:
    return {key_path_str(p): x for p, x in jax.tree_util.tree_flatten_with_path(batch)[0]}


def _check_same_fields(batches: list[dict], names: list[str]) -> None:
    """Raise naming the fields that differ between the sources' batches (weight aside)."""
    ref = _leaves({k: v for k, v in batches[0].items() if k != WEIGHT})
    for i, batch in enumerate(batches[1:], start=1):
        got = _leaves({k: v for k, v in batch.items() if k != WEIGHT})
        missing, extra = sorted(set(ref) - set(got)), sorted(set(got) - set(ref))
        if missing or extra:
            raise InputError(
                message(
                    "mix",
                    f"source {i} ({names[i]}) has other fields than source 0 ({names[0]}): "
                    f"missing {missing}, extra {extra}",
                )
            )
        for name, want in ref.items():
            have = got[name]
            if have.shape[1:] != want.shape[1:] or have.dtype != want.dtype:
                raise InputError(
                    message(
                        "mix",
                        f"field '{name}' of source {i} ({names[i]}) has shape "
                        f"{have.shape[1:]} dtype {have.dtype}, source 0 ({names[0]}) has "
                        f"shape {want.shape[1:]} dtype {want.dtype}",
                    )
                )


def mix(
    key: jax.Array, sources: Sequence[Any], fractions: Any, batch_size: int
) -> tuple[dict, jax.Array, jax.Array]:
    """One batch of ``batch_size`` rows, ``counts[i]`` of them sampled from ``sources[i]``.

    Args:
      key: a PRNG key.
      sources: buffers with the same fields (any classes: uniform, prioritized, HER,
        cached); each is sampled with its own ``sample(key, batch_size)``.
      fractions: S non-negative numbers (normalised), possibly traced.
      batch_size: static number of rows.
    Returns:
      ``(batch, source_id, index)``: ``batch`` has the sources' fields with a leading axis
      of ``batch_size``, rows of source 0 first, then source 1, ...; ``source_id``
      int32[batch_size] is the source of each row and ``index`` int32[batch_size] its slot
      in that source (for ``sources[s].update_weight(index, ...)`` on the rows with
      ``source_id == s``). When any source yields ``weight`` (prioritized), rows of the
      other sources get ``weight = 1``.
    Raises:
      InputError: at trace time, naming the fields, when the sources' fields, shapes or
        dtypes differ, or on bad ``fractions``/``batch_size``.

    Example:
      A quarter of each batch from an online buffer, the rest from an offline one:

      >>> import jax, jax.numpy as jnp
      >>> import jaxbuf
      >>> ex = dict(obs=jnp.zeros(()), act=0, rew=jnp.float32(0), terminated=False,
      ...           truncated=False)
      >>> rows = jax.tree.map(lambda x: jnp.stack([jnp.asarray(x)] * 6), ex)
      >>> online, _ = jaxbuf.ReplayBuffer.create(ex, 8).extend(rows)
      >>> offline, _ = jaxbuf.PrioritizedReplayBuffer.create(ex, 8, 0.6, 0.4).extend(rows)
      >>> batch, source, index = jaxbuf.mix(jax.random.key(0), [online, offline],
      ...                                   [0.25, 0.75], 8)
      >>> source.tolist(), batch["weight"].shape  # uniform rows get weight 1
      ([0, 0, 1, 1, 1, 1, 1, 1], (8,))
    """
    sources = list(sources)
    if not sources:
        raise InputError(message("mix", "sources is empty; pass at least one buffer"))
    counts = mix_counts(fractions, batch_size)
    if counts.shape[0] != len(sources):
        raise InputError(
            message(
                "mix",
                f"got {counts.shape[0]} fractions for {len(sources)} sources; pass one each",
            )
        )
    keys = jax.random.split(key, len(sources))
    drawn = [src.sample(k, batch_size) for src, k in zip(sources, keys)]
    batches = [dict(b) for b, _ in drawn]
    _check_same_fields(batches, [type(s).__name__ for s in sources])
    if any(WEIGHT in b for b in batches):
        for b in batches:
            if WEIGHT not in b:
                b[WEIGHT] = jnp.ones((batch_size,), jnp.float32)
            else:
                b[WEIGHT] = jnp.asarray(b[WEIGHT], jnp.float32)
    position = jnp.arange(batch_size, dtype=jnp.int32)
    ends = jnp.cumsum(counts)
    source_id = jnp.searchsorted(ends, position, side="right").astype(jnp.int32)
    source_id = jnp.minimum(source_id, len(sources) - 1)

    def pick(*leaves):
        stacked = jnp.stack(leaves)
        return stacked[source_id, position]

    batch = jax.tree_util.tree_map(pick, *batches)
    index = pick(*[jnp.asarray(i, jnp.int32) for _, i in drawn])
    return batch, source_id, index
