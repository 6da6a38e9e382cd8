"""The package installs beside other research code: the method imports no TensorFlow, and the wheel with its
core dependencies alone (jax, flax, optax, numpy) runs the NNX example in a fresh virtual environment."""
import os
import subprocess
import sys

import numpy as np
import pytest

from helpers import ROOT


def test_the_sparsity_core_imports_no_training_stack():
  script = ('import sys\n'
            'import pgf_sparsity\n'
            'from pgf_sparsity.sparsity import Recipe, SparseDense, nm_gradient_flow\n'
            'from pgf_sparsity import models\n'
            'heavy = [m for m in ("tensorflow", "tensorflow_datasets", "clu", "grain", "ml_collections", "orbax")'
            ' if m in sys.modules]\n'
            'print(heavy)\n')
  out = subprocess.run([sys.executable, '-c', script], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip() == '[]'


def _run(args, **kwargs):
  done = subprocess.run(args, capture_output=True, text=True, timeout=900, **kwargs)
  assert done.returncode == 0, (args, done.stdout[-2000:], done.stderr[-3000:])
  return done.stdout


@pytest.mark.slow
def test_the_wheel_with_core_dependencies_alone_runs_the_nnx_example(tmp_path):
  _run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps', '--no-build-isolation', '-w', str(tmp_path / 'dist'),
        ROOT])
  wheel, = (tmp_path / 'dist').glob('pgf_sparsity-*.whl')
  venv = tmp_path / 'venv'
  _run([sys.executable, '-m', 'venv', '--without-pip', str(venv)])  # this pip installs into it (--python)
  python = str(venv / 'bin' / 'python')
  pip = [sys.executable, '-m', 'pip', '--python', python]
  _run(pip + ['install', '-q', '--no-compile', '-c', os.path.join(ROOT, 'requirements', 'lock.txt'),
              str(wheel)])  # --no-compile: the example imports a fraction of what is installed
  installed = _run(pip + ['list', '--format=freeze'])
  assert all(f'\n{core}==' in '\n' + installed.lower() for core in ('jax', 'flax', 'optax')), installed
  for heavy in ('tensorflow', 'tensorflow-cpu', 'tensorflow-datasets', 'clu', 'grain', 'torch'):
    assert f'\n{heavy}==' not in '\n' + installed.lower(), heavy
  from sklearn import datasets  # pylint: disable=g-import-not-at-top  (the data, written for the fresh venv)
  digits = datasets.load_digits()
  x, y = (digits.images / 16.0).astype(np.float32), digits.target.astype(np.int32)
  np.savez(tmp_path / 'digits.npz', x_train=x[:-297], y_train=y[:-297], x_test=x[-297:], y_test=y[-297:])
  # Of this environment only PATH and the suite's compiler settings (JAX_*, XLA_*; not its shared compilation
  # cache) reach the example: with them it runs in under half the time.
  jax_settings = {k: v for k, v in os.environ.items() if k.startswith(('JAX_', 'XLA_'))
                  and k != 'JAX_COMPILATION_CACHE_DIR'}
  out = _run([python, os.path.join(ROOT, 'examples', 'nnx_digits.py'), '--steps=150',
              f'--data={tmp_path / "digits.npz"}'], cwd=str(tmp_path), env={'PATH': os.environ['PATH'], **jax_settings})
  accuracy = float(out.strip().splitlines()[-1].split()[-1])
  assert accuracy > 0.5, out
