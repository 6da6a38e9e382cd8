"""The package's C++ kernels for the CPU (this folder's N:M mask, nm_mask.cc; inference's N:M matmul): compiled
with the machine's C++ compiler and registered with XLA's CPU backend through jax.ffi.

Each library is built once per source, compiler flags and jaxlib version, into $PGF_SPARSITY_CACHE (else
~/.cache/pgf_sparsity); `scripts/setup.sh` builds them ahead. Where one cannot be built (no compiler),
`register` says why and its callers compute with XLA instead.
"""
import ctypes
import functools
import glob
import hashlib
import os
import subprocess
import tempfile
from typing import Optional

import jax

FLAGS = ('-O3', '-fopenmp', '-shared', '-fPIC', '-std=c++17', '-w')
# Every C++ source of the package's folders (what scripts/setup.sh builds ahead).
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = tuple(sorted(glob.glob(os.path.join(_PACKAGE, '*', '*.cc'))))


class KernelUnavailableError(ValueError):
  """A kernel could not be built or loaded here (asked for explicitly: a setting this machine cannot honour)."""


def _flags():
  """FLAGS plus the target: this machine's (AVX-512 where it has it), or $PGF_SPARSITY_MARCH (e.g. x86-64-v3
  for the portable loops, as a test does)."""
  return FLAGS + (f'-march={os.environ.get("PGF_SPARSITY_MARCH", "native")}',)


def cache_dir() -> str:
  """$PGF_SPARSITY_CACHE, else ~/.cache/pgf_sparsity."""
  return os.environ.get('PGF_SPARSITY_CACHE') or os.path.join(os.path.expanduser('~'), '.cache', 'pgf_sparsity')


def _library_path(source: str) -> str:
  with open(source, 'rb') as f:
    key = hashlib.sha256(f.read() + ' '.join(_flags()).encode() + jax.lib.__version__.encode()).hexdigest()[:16]
  return os.path.join(cache_dir(), f'{os.path.splitext(os.path.basename(source))[0]}_{key}.so')


def _first_error(stderr: str) -> str:
  """The compiler's first diagnostic of an error ('file:line:col: error: ...'; its last line is only a caret
  under the code). Matched by its marker, not the word alone, which a file's path may hold."""
  lines = stderr.strip().splitlines() or ['']
  return next((line.strip() for line in lines if ' error: ' in line), lines[-1])


def build(source: str) -> str:
  """Compiles `source` (a C++ file's path) once per source, flags and jaxlib; returns the library's path.

  Raises:
    KernelUnavailableError: without a compiler, or where the source does not compile.
  """
  path = _library_path(source)
  if os.path.exists(path):
    return path
  os.makedirs(os.path.dirname(path), exist_ok=True)
  compiler = os.environ.get('CXX', 'g++')
  handle, staged = tempfile.mkstemp(suffix='.so', dir=os.path.dirname(path))
  os.close(handle)
  command = [compiler, *_flags(), f'-I{jax.ffi.include_dir()}', source, '-o', staged]
  try:
    subprocess.run(command, check=True, capture_output=True, text=True)
  except (FileNotFoundError, subprocess.CalledProcessError) as e:
    os.remove(staged)
    if isinstance(e, FileNotFoundError):
      raise KernelUnavailableError(f'no C++ compiler ({compiler}) to build {os.path.basename(source)}') from None
    raise KernelUnavailableError(f'{os.path.basename(source)} did not compile: {_first_error(e.stderr)}') from None
  os.replace(staged, path)  # atomic: a concurrent build never loads a half-written library
  return path


@functools.lru_cache(maxsize=None)
def register(source: str, symbol: str, target: str) -> Optional[str]:
  """Builds and loads `source`, and registers its handler `symbol` as the CPU FFI target `target`.

  Returns:
    None once registered, else why it cannot be (the same answer for the rest of the process).
  """
  try:
    library = ctypes.cdll.LoadLibrary(build(source))
  except (KernelUnavailableError, OSError) as e:
    return str(e)
  jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)), platform='cpu')
  return None
