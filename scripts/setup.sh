#!/usr/bin/env bash
# Creates .venv with the pinned stack (setup.py) and fetches the offline datasets. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -e '.[test]' 2>&1 | grep -v -E '^(WARNING|  )' || true
.venv/bin/python -c 'import pgf_sparsity, jax, flax, optax, clu, orbax.checkpoint, tensorflow_datasets, grain' 2>/dev/null \
  || { echo "setup: the Python environment is broken; see pip's output above" >&2; exit 1; }
bash scripts/get_data.sh
