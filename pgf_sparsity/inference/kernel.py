"""The N:M matmul kernel (nm_matmul.cc) through jax.ffi, built and registered by sparsity/native.py.

`nm_matmul(x, values, positions, m)` is y = x @ W for x (rows, in) and an N:M kernel W (in, out) in the
compute layout of packed_layers.py. Where the kernel cannot be built (no compiler), `available()` says why
and packed_layers computes densely instead.
"""
import os

import jax
import jax.numpy as jnp
import numpy as np

from pgf_sparsity.sparsity import native

KernelUnavailableError = native.KernelUnavailableError
SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'nm_matmul.cc')
TARGET = 'pgf_sparsity_nm_matmul'


def _registered():
  return native.register(SOURCE, 'PgfNmMatmul', TARGET)


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
