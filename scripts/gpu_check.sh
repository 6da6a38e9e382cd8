#!/usr/bin/env bash
# One-call accelerator check (run by the device tool, or by hand on a GPU machine with jax[cuda]):
# core tests on the GPU, the mask benchmark, and ViT-B/16 bf16 train-step speed and MFU.
# Expects wheels of packages the GPU image lacks in .whl/ (ml-collections, clu); writes to ${OUT:-/tmp/gpu_out}.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export JAX_PLATFORMS=cuda PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c 'import jax, flax, optax; print("jax", jax.__version__, "flax", flax.__version__, "optax", optax.__version__, jax.devices())'
JAX_DEFAULT_MATMUL_PRECISION=highest timeout 150 python3 -m pytest -q -x -p no:cacheprovider \
  tests/test_nm.py tests/test_gradient_flow.py tests/test_schedules.py 2>&1 | tail -3 | tee "$OUT/tests.txt"
timeout 110 python3 scripts/bench_masks.py --reps 10 2>&1 | grep -E '^\||^N:M' | tee "$OUT/masks.md"
timeout 300 python3 scripts/bench_train_step.py --model=vit_b16 --flops --rounds 5 --steps 10 \
  --cases dense,mdgf_exponential:1:32,static:1:32,static:2:4 2>&1 | grep -E '^\||^vit' | tee "$OUT/train_step.md"
