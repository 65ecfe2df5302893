"""``jax.random.uniform`` with the Threefry rounds unrolled (used by the priority trees).

On CPU, JAX lowers ``threefry2x32`` to a rolled loop of 5 iterations (to save compile time),
about 40 small kernels, which measured ~45 us per prioritized sample of 256 draws on the
2-core CPU, as much as the rest of the sample. Written with ``jnp`` elementwise ops, the same
hash (Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2, 3", Threefry-2x32 with
20 rounds) fuses into one kernel. For a Threefry key and JAX's default
``jax_threefry_partitionable`` the result is bit for bit ``jax.random.uniform`` (float32),
which the tests check; for any other key implementation, dtype or setting it defers to JAX.
The core's uniform sampler keeps ``jax.random.bits``: there the unrolled hash measured 2-4 us
faster inside a scan but 3-8 us slower per jitted call (2^16, 256 draws).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np

# Buys (benchmarks.run --workload threefry, 2-core CPU, 2^20): prioritized step -20 us CPU (1.2x).
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def _rotl(x: chex.Array, r: int) -> chex.Array:
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def _threefry2x32(k1: chex.Array, k2: chex.Array, x1: chex.Array, x2: chex.Array):
    """Threefry-2x32, 20 rounds, of the counter pairs ``(x1, x2)`` (uint32) under the key
    ``(k1, k2)`` (uint32 scalars)."""
    ks = (k1, k2, k1 ^ k2 ^ np.uint32(0x1BD11BDA))
    x1, x2 = x1 + ks[0], x2 + ks[1]
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            x1 = x1 + x2
            x2 = _rotl(x2, r) ^ x1
        x1 = x1 + ks[(i + 1) % 3]
        x2 = x2 + ks[(i + 2) % 3] + np.uint32(i + 1)
    return x1, x2


def _is_threefry(key: chex.PRNGKey) -> bool:
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.key_impl(key) == jax.random.key_impl(jax.random.key(0))
    return (
        key.shape == (2,)
        and key.dtype == jnp.uint32
        and jax.config.jax_default_prng_impl
        in (
            "threefry2x32",
            "threefry",
        )
    )


def _unrolled(key: chex.PRNGKey, n: int) -> bool:
    return jax.config.jax_threefry_partitionable and _is_threefry(key) and n < 2**32


def _bits(key: chex.PRNGKey, n: int) -> chex.Array:
    """uint32[n]: counter ``i`` hashed under the key, as partitionable Threefry does."""
    data = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    hi = jnp.zeros((n,), jnp.uint32)
    lo = jnp.arange(n, dtype=jnp.uint32)
    b1, b2 = _threefry2x32(data[0], data[1], hi, lo)
    return b1 ^ b2


def uniform(key: chex.PRNGKey, n: int, dtype: jnp.dtype) -> chex.Array:
    """``n`` draws from ``U[0, 1)`` in ``dtype``, equal to ``jax.random.uniform(key, (n,),
    dtype)`` (see the module docstring)."""
    if jnp.dtype(dtype) != jnp.float32 or not _unrolled(key, n):
        return jax.random.uniform(key, (n,), dtype)
    mantissa = (_bits(key, n) >> np.uint32(9)) | np.uint32(0x3F800000)
    return jnp.maximum(0.0, jax.lax.bitcast_convert_type(mantissa, jnp.float32) - 1.0)
