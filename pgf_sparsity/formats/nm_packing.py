"""N:M weights in packed form, with numpy alone (no JAX), so that exported models load anywhere.

A sparse kernel's groups of M weights along its grouping axes (the same groups as its masks) become
  values  (G, N, B): the N kept weights of every group, in group order, and one of
  index   the position of each kept weight in its group, ceil(log2 M) bits each, bit-packed, or
  bitmask one bit per weight, bit-packed (smaller when N/M > 1/ceil(log2 M), e.g. 4:8 or 16:32).
Bits are packed little-endian (bit i of a byte is element i). The bytes are exactly the packed-storage
arithmetic of docs/method.md: N/M of the values plus the index or bitmask bits, rounded up to whole bytes per kernel.
"""
import dataclasses
import math
from typing import Sequence, Tuple

import numpy as np

from pgf_sparsity.sparsity.grouping import to_groups

ENCODINGS = ('index', 'bitmask')


def index_bits(m: int) -> int:
  """Bits per kept weight to name its position in a group of M."""
  return math.ceil(math.log2(m)) if m > 1 else 0


def best_encoding(n: int, m: int) -> str:
  """The smaller encoding of a group: N positions of ceil(log2 M) bits, or M bits (ties: index)."""
  return 'bitmask' if m < n * index_bits(m) else 'index'


def code_bytes(size: int, n: int, m: int, encoding: str) -> int:
  """Bytes of the index or bitmask of a kernel of `size` weights."""
  bits = size // m * n * index_bits(m) if encoding == 'index' else size
  return -(-bits // 8)


def packed_bytes(size: int, n: int, m: int, value_bytes: int, encoding: str) -> int:
  """Bytes of a packed kernel: the kept values plus the index or bitmask."""
  return size // m * n * value_bytes + code_bytes(size, n, m, encoding)


def spec_fraction(n: int, m: int, value_bits: int, encoding: str) -> float:
  """The packed size relative to dense (docs/method.md): N/M of the values plus the index or bitmask bits."""
  code_bits = n / m * index_bits(m) if encoding == 'index' else 1.0
  return n / m + code_bits / value_bits


def pack_bits(values: np.ndarray, bits: int) -> np.ndarray:
  """Non-negative integers < 2**bits, `bits` bits each, little-endian, as uint8."""
  planes = (values.astype(np.uint64).reshape(-1, 1) >> np.arange(bits, dtype=np.uint64)) & 1
  return np.packbits(planes.astype(np.uint8).reshape(-1), bitorder='little')


def unpack_bits(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
  if packed.dtype != np.uint8 or packed.size != -(-count * bits // 8):
    raise ValueError(f'a packed code of {packed.size} bytes cannot hold {count} values of {bits} bits')
  planes = np.unpackbits(packed, count=count * bits, bitorder='little').reshape(count, bits)
  return planes.astype(np.int64) @ (1 << np.arange(bits, dtype=np.int64))


@dataclasses.dataclass(frozen=True)
class PackedKernel:
  values: np.ndarray  # (G, N, B) kept weights
  code: np.ndarray    # uint8: bit-packed positions (index) or keep bits (bitmask)
  encoding: str
  n: int
  m: int
  axes: Tuple[int, ...]
  shape: Tuple[int, ...]


def pack(kernel: np.ndarray, mask: np.ndarray, n: int, m: int, axes: Sequence[int],
         encoding: str = '') -> PackedKernel:
  """The packed form of an N:M kernel.

  Args:
    kernel: the dense kernel.
    mask: its boolean mask, exactly N kept in every group of M along `axes`.
    n: weights kept per group.
    m: group size.
    axes: the grouping axes.
    encoding: 'index' or 'bitmask'; empty: the smaller one (best_encoding).

  Returns:
    A PackedKernel: the kept values (G, N, B) in group order and their positions, bit-packed.

  Raises:
    ValueError: if the mask is not exactly N:M.
  """
  axes = tuple(axes)
  groups, _ = to_groups(np.asarray(kernel), axes, m)
  keep, _ = to_groups(np.asarray(mask, bool), axes, m)
  counts = keep.sum(axis=1)
  if not (counts == n).all():
    raise ValueError(f'the mask is not exactly {n}:{m} ({int((counts != n).sum())} of {counts.size} groups '
                     'keep another number of weights)')
  order = np.argsort(~keep, axis=1, kind='stable')[:, :n, :]  # positions of the kept weights, ascending
  values = np.take_along_axis(groups, order, axis=1)
  encoding = encoding or best_encoding(n, m)
  if encoding == 'index':
    code = pack_bits(order, index_bits(m))
  elif encoding == 'bitmask':
    code = np.packbits(keep.reshape(-1).astype(np.uint8), bitorder='little')
  else:
    raise ValueError(f'unknown encoding {encoding!r}; one of {ENCODINGS}')
  return PackedKernel(values, code, encoding, n, m, axes, tuple(np.shape(kernel)))


def pack_exact(kernel: np.ndarray, n: int, m: int, axes: Sequence[int], encoding: str = '') -> PackedKernel:
  """The packed form of a kernel that is exactly N:M as it stands: its non-zeros, plus, in groups with fewer
  than N, the lowest-index zeros.

  Raises:
    ValueError: if a group has more than N non-zeros.
  """
  groups, restore = to_groups(np.asarray(kernel), tuple(axes), m)
  if ((groups != 0).sum(axis=1) > n).any():
    raise ValueError(f'not exactly {n}:{m}: some groups have more non-zeros')
  rank = np.argsort(np.argsort(groups == 0, axis=1, kind='stable'), axis=1, kind='stable')
  return pack(kernel, restore(rank < n), n, m, axes, encoding)


def kept_positions(packed: PackedKernel) -> np.ndarray:
  """The in-group position of every kept value, (G, N, B) ascending along N, checked against the values.

  Raises:
    ValueError: on positions or a bitmask that do not fit the values (a corrupted file).
  """
  g, n, b = packed.values.shape
  if n != packed.n or g * packed.m * b != math.prod(packed.shape):
    raise ValueError(f'values of shape {packed.values.shape} do not fit a {packed.n}:{packed.m} kernel of shape '
                     f'{packed.shape}')
  if packed.encoding == 'index':
    order = unpack_bits(packed.code, index_bits(packed.m), packed.values.size).reshape(g, n, b)
    if (order >= packed.m).any() or (np.diff(order, axis=1) <= 0).any():
      raise ValueError('the index names positions outside their group, or one position twice')
    return order
  if packed.encoding == 'bitmask':
    count = g * packed.m * b
    if packed.code.size != -(-count // 8):
      raise ValueError(f'a bitmask of {packed.code.size} bytes does not fit {count} weights')
    keep = np.unpackbits(packed.code, count=count, bitorder='little').reshape(g, packed.m, b).astype(bool)
    if not (keep.sum(axis=1) == n).all():
      raise ValueError(f'the bitmask is not exactly {n}:{packed.m}')
    return np.argsort(~keep, axis=1, kind='stable')[:, :n, :]
  raise ValueError(f'unknown encoding {packed.encoding!r}; one of {ENCODINGS}')


def unpack(packed: PackedKernel) -> np.ndarray:
  """The dense kernel of a packed one.

  Args:
    packed: a PackedKernel, as `pack` made it or a file held it.

  Returns:
    The dense kernel, zero at pruned weights.

  Raises:
    ValueError: on positions or a bitmask that do not fit the values (a corrupted file).
  """
  order = kept_positions(packed)
  g, _, b = packed.values.shape
  dense = np.zeros((g, packed.m, b), packed.values.dtype)
  np.put_along_axis(dense, order, packed.values, axis=1)
  _, restore = to_groups(np.zeros(packed.shape, np.int8), packed.axes, packed.m)
  return restore(dense)


VALUE_BITS = {'float32': 32, 'bfloat16': 16, 'float16': 16}


def memory_rows(layers, dtypes=tuple(VALUE_BITS)):
  """Per sparse kernel and value dtype: dense, index-packed, bitmask-packed and chosen bytes, the chosen
  size relative to dense, the docs' fraction, and their ratio (1 up to rounding to whole bytes).

  `layers` maps kernel paths to (shape, n, m)."""
  rows = []
  for dtype in dtypes:
    value_bytes = VALUE_BITS[dtype] // 8
    for path, (shape, n, m) in layers.items():
      size = math.prod(shape)
      encoding = best_encoding(n, m)
      sizes = {e: packed_bytes(size, n, m, value_bytes, e) for e in ENCODINGS}
      fraction = sizes[encoding] / (size * value_bytes)
      spec = spec_fraction(n, m, VALUE_BITS[dtype], encoding)
      rows.append({'layer': path, 'pattern': f'{n}:{m}', 'dtype': dtype, 'dense_bytes': size * value_bytes,
                   'index_bytes': sizes['index'], 'bitmask_bytes': sizes['bitmask'], 'encoding': encoding,
                   'packed_bytes': sizes[encoding], 'packed_fraction': fraction, 'spec_fraction': spec,
                   'ratio_to_spec': fraction / spec})
  return rows
