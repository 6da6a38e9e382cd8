#!/usr/bin/env bash
# Creates .venv with the tested versions (requirements/lock.txt as constraints), the package (editable) with
# its training stack, examples and test dependencies, and fetches the offline datasets. Idempotent; stops
# with an error if anything the tests need does not import.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! .venv/bin/python -m pip install -q -c requirements/lock.txt -e '.[test]' >.venv/pip.log 2>&1; then
  grep -v -E '^(WARNING|  )' .venv/pip.log | tail -20 >&2
  echo "setup: pip could not install the tested environment (full log: .venv/pip.log)" >&2
  exit 1
fi
missing=$(.venv/bin/python - <<'PY'
import importlib
names = ('pgf_sparsity jax flax optax clu orbax.checkpoint tensorflow_datasets grain sklearn sentencepiece '
         'sacrebleu safetensors tensorstore equinox torch transformers pytest xdist hypothesis matplotlib')
missing = []
for name in names.split():
  try:
    importlib.import_module(name)
  except Exception as e:  # pylint: disable=broad-except
    missing.append(f'{name} ({type(e).__name__}: {e})')
print('; '.join(missing))
PY
)
[[ -z $missing ]] || { echo "setup: these do not import: $missing" >&2; exit 1; }
bash scripts/get_data.sh
# The C++ kernels (the N:M mask of training, the N:M matmul of inference; through jax.ffi), compiled once per
# machine into ~/.cache/pgf_sparsity.
.venv/bin/python -c "from pgf_sparsity.sparsity import native; [native.build(s) for s in native.SOURCES]" \
  || { echo "setup: the C++ kernels did not build (is g++ installed?)" >&2; exit 1; }
