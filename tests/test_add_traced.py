"""``add`` with host (NumPy) rows and traced ``buffer_ids`` inside ``jit``: the rows are
indexed by a traced write plan, so they must become JAX arrays before it (a regression:
this raised TracerArrayConversionError for a buffer created inside the jitted function)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import EXAMPLE, rows

import jaxbuf

ROWS = rows([1.0, 2.0, 3.0, 4.0, 5.0], rew=[1, 2, 3, 4, 5], terminated=[0, 1, 0, 0, 1])
IDS = np.array([0, 0, 1, 1, 1], np.int32)

MAKERS = {
    "vector": lambda: jaxbuf.VectorReplayBuffer.create(EXAMPLE, 8, 2),
    "prioritized": lambda: jaxbuf.PrioritizedVectorReplayBuffer.create(
        EXAMPLE, 8, 2, alpha=0.6, beta=0.4
    ),
}


@pytest.mark.parametrize("kind", sorted(MAKERS))
@pytest.mark.parametrize("created_inside", [True, False])
def test_numpy_rows_with_traced_ids_inside_jit_equal_the_eager_add(kind, created_inside):
    eager, eager_res = MAKERS[kind]().add(ROWS, IDS)
    outside = MAKERS[kind]()

    @jax.jit
    def run(ids):
        buf = MAKERS[kind]() if created_inside else outside
        buf, res = buf.add(ROWS, ids)  # ROWS stay NumPy; ids are traced
        return buf.read(jnp.arange(buf.maxsize)), buf.size, res.episode_return

    stored, size, ret = run(jnp.asarray(IDS))
    assert int(size) == int(eager.size) == 5
    np.testing.assert_array_equal(ret, eager_res.episode_return)
    np.testing.assert_array_equal(ret, [0, 3, 0, 0, 12])
    for name, value in eager.read(jnp.arange(eager.maxsize)).items():
        np.testing.assert_array_equal(stored[name], value, err_msg=name)
