"""Frame stacking: the slots of the ``stack_num`` frames read for one index (Tianshou's rule).

For ``K = stack_num`` the frames of index ``i`` are ``f_{K-1} = i`` and
``f_{j-1} = prev(f_j)``; the output stacks ``x[f_0], ..., x[f_{K-1}]`` (oldest first) on a
new axis right after the index's axes. At an episode start ``prev`` is the identity, so the
first frame is repeated as padding.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax


def frame_indices(index: jax.Array, prev: Callable, stack_num: int) -> jax.Array:
    """int32[*index.shape, K]: the K frame slots of each index, oldest first.

    A ``lax.scan`` over the K-1 ``prev`` steps: unrolling them in Python is slower for
    stacked Atari-sized samples (docs/design.md), unlike the unrolled search of
    ``sampling.sorted_position``.
    """
    if stack_num == 1:
        return index[..., None]

    def step(cur, _):
        p = prev(cur)
        return p, p

    _, older = lax.scan(step, index, None, length=stack_num - 1)  # [K-1, ...], newest first
    frames = jnp.concatenate([older[::-1], index[None]], axis=0)
    return jnp.moveaxis(frames, 0, -1)
