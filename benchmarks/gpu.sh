#!/usr/bin/env bash
# The accelerator benchmark in one command, for a bare machine that already has jax (with its
# CUDA or TPU plugin), flax, chex, optax and orbax.
#
#   benchmarks/gpu.sh              # the GPU profile (about 4 minutes on one GPU)
#   benchmarks/gpu.sh --quick      # the same workloads at small sizes (runs on a CPU too)
#   benchmarks/gpu.sh --workload add sample   # any other option of python -m benchmarks.run
#
# Installs what is missing (flashbax, rlax, gymnax and their pure-Python dependencies) from
# the wheels in benchmarks/wheels/, without the network, then runs
# `python -m benchmarks.run --profile gpu`. Results (JSON and a Markdown table) go to
# $OUT/benchmarks when OUT is set, else to benchmarks/results/. A peer that still cannot be
# imported is reported as "skipped" and the rest of the run goes on.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
WHEELS=benchmarks/wheels

# module to import -> wheels that provide it and what it needs beyond the device image
need() {
    local module="$1"
    shift
    if ! "$PY" -c "import $module" >/dev/null 2>&1; then
        echo "installing for $module: $*"
        "$PY" -m pip install --quiet --no-index --no-deps --find-links "$WHEELS" "$@" ||
            echo "could not install $* (the $module rows will say skipped)"
    fi
}
need toolz toolz
need flashbax flashbax
need tensorflow_probability tfp-nightly cloudpickle
need dm_env dm-env
need distrax distrax
need rlax rlax
need gymnasium gymnasium farama-notifications cloudpickle
need seaborn seaborn
need gymnax gymnax

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# Use the accelerator's memory on demand: the workloads allocate and free buffers in turn.
export XLA_PYTHON_CLIENT_PREALLOCATE="${XLA_PYTHON_CLIENT_PREALLOCATE:-false}"
exec "$PY" -m benchmarks.run --profile gpu "$@"
