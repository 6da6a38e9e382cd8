"""The N:M matmul kernel (nm_matmul.cc) through jax.ffi: built with the machine's C++ compiler on first use,
cached by source, compiler flags and jaxlib version, and registered with XLA's CPU backend.

`nm_matmul(x, values, positions, m)` is y = x @ W for x (rows, in) and an N:M kernel W (in, out) in the
compute layout of packed_layers.py. Where the kernel cannot be built (no compiler), `available()` says why
and packed_layers computes densely instead.
"""
import ctypes
import functools
import hashlib
import os
import subprocess
import tempfile
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'nm_matmul.cc')
TARGET = 'pgf_sparsity_nm_matmul'
FLAGS = ('-O3', '-fopenmp', '-shared', '-fPIC', '-std=c++17', '-w')


def _flags():
  """FLAGS plus the target: this machine's (AVX-512 where it has it), or $PGF_SPARSITY_MARCH (e.g. x86-64-v3
  for the portable loops, as a test does)."""
  return FLAGS + (f'-march={os.environ.get("PGF_SPARSITY_MARCH", "native")}',)


class KernelUnavailableError(ValueError):
  """The N:M kernel could not be built or loaded here (asked for with path='sparse': a setting this machine
  cannot honour)."""


def cache_dir() -> str:
  """$PGF_SPARSITY_CACHE, else ~/.cache/pgf_sparsity."""
  return os.environ.get('PGF_SPARSITY_CACHE') or os.path.join(os.path.expanduser('~'), '.cache', 'pgf_sparsity')


def _library_path() -> str:
  with open(SOURCE, 'rb') as f:
    key = hashlib.sha256(f.read() + ' '.join(_flags()).encode() + jax.lib.__version__.encode()).hexdigest()[:16]
  return os.path.join(cache_dir(), f'nm_matmul_{key}.so')


def build() -> str:
  """Compiles the kernel (once per source, flags and jaxlib) and returns the library's path."""
  path = _library_path()
  if os.path.exists(path):
    return path
  os.makedirs(os.path.dirname(path), exist_ok=True)
  compiler = os.environ.get('CXX', 'g++')
  handle, staged = tempfile.mkstemp(suffix='.so', dir=os.path.dirname(path))
  os.close(handle)
  command = [compiler, *_flags(), f'-I{jax.ffi.include_dir()}', SOURCE, '-o', staged]
  try:
    subprocess.run(command, check=True, capture_output=True, text=True)
  except FileNotFoundError:
    raise KernelUnavailableError(f'no C++ compiler ({compiler}) to build the N:M kernel') from None
  except subprocess.CalledProcessError as e:
    raise KernelUnavailableError(f'the N:M kernel did not compile: {(e.stderr.strip().splitlines() or [""])[-1]}'
                                 ) from None
  os.replace(staged, path)  # atomic: a concurrent build never loads a half-written library
  return path


@functools.lru_cache(maxsize=None)
def _registered() -> Optional[str]:
  """None once the kernel is registered with XLA, else why it cannot be."""
  try:
    library = ctypes.cdll.LoadLibrary(build())
  except (KernelUnavailableError, OSError) as e:
    return str(e)
  jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(library.PgfNmMatmul), platform='cpu')
  return None


def available() -> bool:
  return jax.default_backend() == 'cpu' and _registered() is None


def unavailable_reason() -> str:
  if jax.default_backend() != 'cpu':
    return f'the N:M kernel runs on the CPU; the default backend is {jax.default_backend()}'
  return _registered() or ''


def nm_matmul(x: jax.Array, values: jax.Array, positions: jax.Array, m: int) -> jax.Array:
  """x (rows, in) float32 times the N:M kernel held as values (out/16, in/M, N, 16) float32 and in-group
  positions of the same shape (uint8): (rows, out) float32."""
  if not available():
    raise KernelUnavailableError(unavailable_reason())
  out = jax.ShapeDtypeStruct((x.shape[0], values.shape[0] * values.shape[3]), jnp.float32)
  return jax.ffi.ffi_call(TARGET, out)(x.astype(jnp.float32), values, positions, m=np.int64(m))
