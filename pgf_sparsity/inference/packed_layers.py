"""N:M layers computed from their packed form: the kept values and their in-group positions, never the
dense kernel.

A sparse kernel (contracted axes first, grouped along them; SparseDenseGeneral's layout) becomes a
`CompactKernel`: the kernel as a matrix (in, out), its groups of M along `in`, stored per block of 16
outputs as values (out/16, in/M, N, 16) and uint8 positions of the same shape, so that the kernel streams
each block's weights once, in order. `apply` runs a Flax model with every such layer computed that way
where `choose` says the sparse path is faster, and densely elsewhere.

The rule (`automatic`): the sparse path where N/M is at most 1/4, or where a call has a single row (2:4
included); dense otherwise and wherever the kernel cannot be built; `path='sparse'` or `'dense'` forces
either. It follows scripts/bench_inference.py: the kernel streams 5 bytes per kept weight (a float32 value, a
byte of position) against dense's 4 per weight, so where time is the bytes read (a single row) it wins even
at 2:4; with more rows dense approaches its arithmetic peak while each kept weight costs the kernel a permute
beside its multiply-add, which at N/M <= 1/4 still leaves it ahead and at 2:4 does not (docs/inference.md
has the measured table).
"""
import dataclasses
import math
from typing import Any, Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np

from pgf_sparsity.formats import nm_packing
from pgf_sparsity.inference import kernel as kernel_lib

LANES = 16  # outputs per block: one AVX-512 register of float32
PATHS = ('auto', 'sparse', 'dense')


@dataclasses.dataclass(frozen=True)
class CompactKernel:
  values: np.ndarray     # (ceil(out/16), in/M, N, 16) float32, zero in the padding past `out`
  positions: np.ndarray  # uint8, same shape: each value's position in its group of M
  n: int
  m: int
  shape: tuple           # the Flax kernel's shape (contracted axes first)

  @property
  def fan_in(self) -> int:
    return self.values.shape[1] * self.m

  @property
  def fan_out(self) -> int:
    return math.prod(self.shape) // self.fan_in

  def bytes_read(self) -> int:
    return self.values.nbytes + self.positions.nbytes


def compact(packed: nm_packing.PackedKernel) -> CompactKernel:
  """The compute layout of a packed kernel whose groups run along its leading (contracted) axes.

  Raises:
    ValueError: for groups along other axes, M above 128 (positions are one byte; the kernel's limit), or
      positions that do not fit the values.
  """
  axes = tuple(packed.axes)
  if axes != tuple(range(len(axes))) or packed.m > 128 or packed.m & (packed.m - 1):
    raise ValueError(f'the packed kernel ({packed.n}:{packed.m} along axes {axes}) has no compute layout: '
                     'groups must run along the leading axes, M a power of two up to 128')
  order = nm_packing.kept_positions(packed)  # (G, N, B): G = in / M groups, B = out
  groups, n, out = packed.values.shape
  blocks = -(-out // LANES)

  def blocked(x):
    padded = np.zeros((groups, n, blocks * LANES), x.dtype)
    padded[..., :out] = x
    return np.ascontiguousarray(padded.reshape(groups, n, blocks, LANES).transpose(2, 0, 1, 3))

  return CompactKernel(blocked(packed.values.astype(np.float32)), blocked(order.astype(np.uint8)),
                       packed.n, packed.m, tuple(packed.shape))


def from_dense(kernel: np.ndarray, n: int, m: int, in_ndim: int = 1) -> CompactKernel:
  """The compact form of an exactly N:M kernel given dense (its non-zeros, plus in groups with fewer than N
  the lowest-index zeros)."""
  return compact(nm_packing.pack_exact(kernel, n, m, tuple(range(in_ndim)), 'index'))


MAX_AUTO_DENSITY = 0.25


def automatic(n: int, m: int, rows: int) -> str:
  """The rule: 'sparse' where N/M <= 1/4, or for a single row (2:4 included), else 'dense'."""
  return 'sparse' if n / m <= MAX_AUTO_DENSITY or rows == 1 else 'dense'


def _check_path(path: str) -> None:
  """A known path, and the kernel built where 'sparse' asks for it."""
  if path not in PATHS:
    raise ValueError(f'unknown inference path {path!r}; one of {PATHS}')
  if path == 'sparse' and not kernel_lib.available():
    raise kernel_lib.KernelUnavailableError(kernel_lib.unavailable_reason())


def choose(kernel: CompactKernel, rows: int, path: str = 'auto') -> str:
  """'sparse' or 'dense' for a call of `rows` rows: `automatic` where the kernel is available, or as forced."""
  _check_path(path)
  if path != 'auto':
    return path
  return automatic(kernel.n, kernel.m, rows) if kernel_lib.available() else 'dense'


def matmul(rows: jax.Array, kernel: CompactKernel, arrays) -> jax.Array:
  """rows (R, in) times the kernel as a matrix: (R, out). `arrays`: (values, positions) as JAX arrays."""
  values, positions = arrays
  return kernel_lib.nm_matmul(rows, values, positions, kernel.m)[:, :kernel.fan_out]


class PackedModel:
  """A model's compact kernels ({Flax kernel path: CompactKernel}), their arrays on the default device, and
  the path to take ('auto', 'sparse' or 'dense'); `apply` is what evaluation calls in place of model.apply."""

  def __init__(self, kernels: Dict[str, CompactKernel], path: str = 'auto'):
    _check_path(path)
    self.kernels, self.path = kernels, path
    self.arrays = {p: (jnp.asarray(k.values), jnp.asarray(k.positions)) for p, k in kernels.items()}

  def apply(self, model, variables, *args, arrays, **kwargs) -> Any:
    """model.apply(variables, *args, **kwargs) with every SparseDenseGeneral whose kernel is in `kernels`
    computed from `arrays` (this model's, passed through jit) where `choose` picks the sparse path."""
    import flax.linen as nn  # pylint: disable=g-import-not-at-top
    from pgf_sparsity.sparsity.layers import SparseDenseGeneral  # pylint: disable=g-import-not-at-top
    modules = {p.rpartition('/')[0]: p for p in self.kernels}  # the module's path: the kernel's, less 'kernel'

    def interceptor(next_fun, call_args, call_kwargs, context):
      module = context.module
      name = modules.get('/'.join(module.path))
      if context.method_name != '__call__' or name is None or not isinstance(module, SparseDenseGeneral):
        return next_fun(*call_args, **call_kwargs)
      y = _sparse_call(module, call_args[0], self.kernels[name], arrays[name], self.path)
      return next_fun(*call_args, **call_kwargs) if y is None else y

    with nn.intercept_methods(interceptor):
      return model.apply(variables, *args, **kwargs)


def from_file(path: str, inference: str = 'auto') -> PackedModel:
  """The PackedModel of an exported model file's N:M kernels (those whose groups run along the contracted
  axes; any other stays dense)."""
  from pgf_sparsity.formats import model_files  # pylint: disable=g-import-not-at-top
  kernels = {}
  for name, packed in model_files.packed_kernels(path).items():
    try:
      kernels[name] = compact(packed)
    except ValueError:
      continue
  return PackedModel(kernels, inference)


def _sparse_call(module, x: jax.Array, kernel: CompactKernel, arrays, path: str) -> Optional[jax.Array]:
  """The layer's output through the kernel, or None where the dense path is the choice."""
  axes = (module.axis,) if isinstance(module.axis, int) else tuple(module.axis)
  axes = tuple(a % x.ndim for a in axes)
  batch_axes = tuple(a for a in range(x.ndim) if a not in axes)
  rows = jnp.transpose(x, batch_axes + axes).reshape(-1, kernel.fan_in)
  if choose(kernel, rows.shape[0], path) == 'dense':
    return None
  features = kernel.shape[len(axes):]
  y = matmul(rows, kernel, arrays).reshape(tuple(x.shape[a] for a in batch_axes) + features)
  bias = module.get_variable('params', 'bias') if module.use_bias else None
  y = y.astype(module.dtype or x.dtype)
  return y + bias.astype(y.dtype) if bias is not None else y
