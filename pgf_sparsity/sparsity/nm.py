"""N:M masks: in every group of M consecutive weights along the grouped axis, keep the N of largest |w|.

Ties are broken deterministically: among equal magnitudes the lower index within the group wins. Every
method below is exact and returns the same mask; `nm_mask` picks the fastest one for (N, M), following the
measurements of `scripts/bench_masks.py` (the cost of each method depends on N and M, not on the values).
Ranking works on the int32 bit pattern of |w|, which orders non-negative floats exactly like their values.
On the CPU the fastest is a C++ kernel (nm_mask.cc) where it builds; the others are XLA programs.
"""
import functools
import math
import os
from typing import Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from pgf_sparsity.sparsity import native
from pgf_sparsity.sparsity.grouping import to_groups

Axes = Union[int, Sequence[int]]

_INT32_MAX = 2**31 - 1


def validate_pattern(n, m) -> None:
  """Checks an N:M pattern on its own.

  Args:
    n: weights kept per group.
    m: group size.

  Raises:
    ValueError: unless n and m are Python integers with 0 < n <= m.
  """
  for name, value in (('n', n), ('m', m)):
    if isinstance(value, bool) or not isinstance(value, int):
      raise ValueError(f'N:M pattern needs integers, got {name}={value!r}.')
  if not 0 < n <= m:
    raise ValueError(f'Invalid N:M pattern {n}:{m}: need 0 < N <= M (N is the number kept per group).')


def _normalize_axes(axes: Axes, ndim: int) -> Tuple[int, ...]:
  axes = (axes,) if isinstance(axes, int) else tuple(axes)
  if not axes:
    raise ValueError('nm_mask needs at least one grouping axis.')
  normalized = []
  for axis in axes:
    if isinstance(axis, bool) or not isinstance(axis, int) or not -ndim <= axis < ndim:
      raise ValueError(f'Grouping axis {axis!r} is not valid for an array of rank {ndim}.')
    normalized.append(axis % ndim)
  if len(set(normalized)) != len(normalized):
    raise ValueError(f'Grouping axes {axes} repeat an axis.')
  return tuple(sorted(normalized))


def check_groupable(shape: Sequence[int], n: int, m: int, axis: Axes = 0) -> Tuple[int, ...]:
  """Checks an N:M pattern against a kernel's shape.

  Args:
    shape: the kernel's shape.
    n: weights kept per group.
    m: group size; must divide the product of the grouped axes' lengths.
    axis: the grouping axis, or a tuple of axes grouped together in row-major order.

  Returns:
    The grouping axes, non-negative and sorted.

  Raises:
    ValueError: naming the pattern and the shape.
  """
  validate_pattern(n, m)
  axes = _normalize_axes(axis, len(shape))
  length = math.prod(shape[a] for a in axes)
  if length % m:
    raise ValueError(f'M={m} does not divide the grouped length {length} (axes {axes} of shape '
                     f'{tuple(shape)}); choose M dividing it or another grouping axis.')
  return axes


def _keys(w: jax.Array) -> jax.Array:
  return lax.bitcast_convert_type(jnp.abs(w).astype(jnp.float32), jnp.int32)


def _mask_by_argmax(key: jax.Array, n: int) -> jax.Array:
  """N rounds of argmax (first occurrence wins): fastest for small groups."""
  idx = lax.broadcasted_iota(jnp.int32, key.shape, 1)
  keep = jnp.zeros(key.shape, bool)
  for _ in range(n):
    hit = idx == jnp.argmax(key, axis=1)[:, None, :]
    keep = keep | hit
    key = jnp.where(hit, -1, key)
  return keep


_MEMBERS_PER_REDUCE = 32  # XLA's CPU compiler turns a longer reduction into reduce-windows (see _over_members)
_REDUCERS = {'max': (jnp.max, jnp.maximum), 'min': (jnp.min, jnp.minimum)}


def _over_members(x: jax.Array, how: str, sliced: bool) -> jax.Array:
  """The max or min of each group's members (axis 1 of (groups, M, columns)), keeping the axis.

  `sliced`: groups of more than 32 are reduced in slices of 32 combined elementwise. XLA's CPU compiler
  rewrites a longer reduction (even one reshaped into shorter ones) into a tree of reduce-windows, which it does
  not fuse with the computation of their input: in a train step the keys of 1:128 were written out and read back
  (8 kernels of 1536x384: 12 ms -> 7 ms of the step's kernels). Slicing pays for one reduction, not for a chain
  of them: each slice's loop repeats the chain (16:256 by 16 rounds of extremes: 6x slower, compiling in 12 s).
  """
  reduce, combine = _REDUCERS[how]
  m = x.shape[1]
  if not sliced or m <= _MEMBERS_PER_REDUCE:
    return reduce(x, axis=1, keepdims=True)
  return functools.reduce(combine, (reduce(x[:, i:i + _MEMBERS_PER_REDUCE], axis=1, keepdims=True)
                                    for i in range(0, m, _MEMBERS_PER_REDUCE)))


def _mask_by_extremes(key: jax.Array, n: int) -> jax.Array:
  """min(N, M-N) rounds of picking the largest to keep, or the smallest to drop."""
  m = key.shape[1]
  sliced = min(n, m - n) == 1
  idx = lax.broadcasted_iota(jnp.int32, key.shape, 1)
  if n <= m - n:
    keep = jnp.zeros(key.shape, bool)
    for _ in range(n):
      top = _over_members(key, 'max', sliced)
      first = _over_members(jnp.where(key == top, idx, m), 'min', sliced)
      hit = idx == first
      keep = keep | hit
      key = jnp.where(hit, -1, key)
    return keep
  drop = jnp.zeros(key.shape, bool)
  for _ in range(m - n):
    bottom = _over_members(key, 'min', sliced)
    last = _over_members(jnp.where(key == bottom, idx, -1), 'max', sliced)  # the higher index loses a tie
    hit = idx == last
    drop = drop | hit
    key = jnp.where(hit, _INT32_MAX, key)
  return ~drop


def _word_width(m: int) -> int:
  """Members per packed word: the largest divisor of M up to 32."""
  return max(d for d in range(1, min(m, 32) + 1) if m % d == 0)


def _packed(keep: jax.Array) -> jax.Array:
  """The flags (groups, M, columns) packed by a reduce into 32-bit words, `_word_width(M)` members each."""
  groups, m, columns = keep.shape
  width = _word_width(m)
  shifts = lax.broadcasted_iota(jnp.uint32, (1, 1, width, 1), 2)
  bits = keep.reshape(groups, m // width, width, columns).astype(jnp.uint32) << shifts
  return bits.sum(axis=2, dtype=jnp.uint32)  # distinct bits: the sum is their OR


def _unpacked(words: jax.Array, m: int) -> jax.Array:
  groups, _, columns = words.shape
  width = _word_width(m)
  shifts = lax.broadcasted_iota(jnp.uint32, (1, 1, width, 1), 2)
  return ((words[:, :, None, :] >> shifts) & 1).astype(bool).reshape(groups, m, columns)


def _stored_once(keep: jax.Array) -> jax.Array:
  """The mask `keep` (groups, M, columns), computed once: its bits are packed by a reduce into 32-bit words
  (of up to 32 members of a group) and read back from them.

  A mask made of elementwise operations only is one that XLA fuses into every consumer, recomputing it from the
  weights in each (in a train step the effective weights, the gradient flow, the stored mask and the flip count:
  4x the work, 4x the reads of the weights, and a copy of the weights that the optimizer overwrites in place). A
  reduce's output is stored, so the consumers read its words (a byte per 8 weights for M >= 32) and decode bits.
  """
  return _unpacked(_packed(keep), keep.shape[1])


def _mask_by_rank(key: jax.Array, n: int) -> jax.Array:
  """Each entry's rank in its group: how many of the group's M members beat it (are larger, or equal and
  earlier), counted in M elementwise passes that XLA fuses into one loop over the kernel. Its cost grows with
  M, not N: it wins for groups of up to 8 (2:4, 4:8), and for groups of up to 64 that keep and drop many
  weights where the selection network compiles slowly (32:64)."""
  m = key.shape[1]
  index = lax.broadcasted_iota(jnp.uint32, (1, m, 1), 1)  # each entry's index i in its group
  key = key.astype(jnp.uint32)  # keys are at most 2**31 - 1: adding one cannot overflow
  beaten_by = jnp.zeros(key.shape, jnp.int32)
  for j in range(m):
    # Member j beats entry i when key_j > key_i, or key_j == key_i and j < i: key_j + [j < i] > key_i.
    beaten_by += (key[:, j:j + 1, :] + (index > j).astype(jnp.uint32) > key).astype(jnp.int32)
  return _stored_once(beaten_by < n)


def _mask_by_network(key: jax.Array, n: int) -> jax.Array:
  """The N-th largest key of each group from a selection network, then every member at or above it (where
  `network_compiles_quickly`: larger networks take long to compile).

  Each member in turn goes through a sorted list of the K largest keys so far (K = N, or the M - N + 1 smallest
  when more are kept than dropped), one max and one min per list entry, in the one fused loop that packs the
  kept flags: where picking extremes takes 2 passes over the kernel per round. The members at or above the N-th
  largest are exactly the N kept unless keys tie at that value (rare in float weights, but zeros or copied
  weights tie): those kernels are masked again by picking extremes, which splits ties by index.
  """
  groups, m, columns = key.shape
  keep_side = n <= m - n
  size = n if keep_side else m - n + 1
  fill = jnp.int32(-1 if keep_side else _INT32_MAX)  # keys are >= 0: the list starts below (above) every key
  listed = [jnp.full((groups, columns), fill) for _ in range(size)]
  for j in range(m):
    x = key[:, j, :]
    for r in range(size):
      if keep_side:
        listed[r], x = jnp.maximum(listed[r], x), jnp.minimum(listed[r], x)
      else:
        listed[r], x = jnp.minimum(listed[r], x), jnp.maximum(listed[r], x)
  kept = _packed(key >= listed[-1][:, None, :])
  exact = jnp.all(lax.population_count(kept).astype(jnp.int32).sum(axis=1) == n)
  kept = lax.cond(exact, lambda k: kept, lambda k: _packed(_mask_by_extremes(k, n)), key)
  return _unpacked(kept, m)


def _mask_by_bisection(key: jax.Array, n: int) -> jax.Array:
  """Finds each group's N-th largest key bit by bit (31 counting passes), then splits ties by index."""
  m = key.shape[1]

  def count(x):
    return x.sum(axis=1, keepdims=True, dtype=jnp.int32)

  threshold = jnp.zeros((key.shape[0], 1, key.shape[2]), jnp.int32)
  for bit in range(30, -1, -1):
    candidate = threshold | (1 << bit)
    threshold = jnp.where(count(key >= candidate) >= n, candidate, threshold)
  above = key > threshold
  at = key == threshold
  still_needed = n - count(above)
  idx = lax.broadcasted_iota(jnp.int32, key.shape, 1)
  # Largest index bound s such that fewer than still_needed tied entries lie below it.
  bound = jnp.zeros_like(threshold)
  for bit in range(max(1, (m - 1).bit_length()) - 1, -1, -1):
    candidate = bound | (1 << bit)
    bound = jnp.where(count(at & (idx < candidate)) < still_needed, candidate, bound)
  return above | (at & (idx <= bound))


_KERNEL_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'nm_mask.cc')
_KERNEL_TARGET = 'pgf_sparsity_nm_mask'
_KERNEL_MAX_LIST = 16  # nm_mask.cc's kMaxList


def kernel_unavailable_reason(n: int, m: int) -> Optional[str]:
  """None where the C++ mask kernel computes N:M here, else why not: it runs on a CPU backend of one device
  (it has no sharding rule: XLA would gather a sharded kernel's weights to every device to call it, where its
  own programs compute each shard's groups where they are), where it builds, for lists of up to 16 of the most
  extreme keys (min(N, M - N + 1)), at any M."""
  if jax.default_backend() != 'cpu':
    return f'the mask kernel runs on the CPU; the default backend is {jax.default_backend()}'
  if jax.device_count() > 1:
    return f'the mask kernel has no sharding rule; this run has {jax.device_count()} devices'
  if min(n, m - n + 1) > _KERNEL_MAX_LIST:
    return f'the mask kernel keeps lists of up to {_KERNEL_MAX_LIST}; {n}:{m} needs {min(n, m - n + 1)}'
  return native.register(_KERNEL_SOURCE, 'PgfNmMask', _KERNEL_TARGET)


def _mask_by_kernel(groups: jax.Array, n: int) -> jax.Array:
  """The C++ kernel: one pass over the weights, with none of the copies of their keys that XLA writes before a
  selection network (nm_mask.cc says how). Its words are unpacked where the mask is used, as the network's."""
  reason = kernel_unavailable_reason(n, groups.shape[1])
  if reason:
    raise native.KernelUnavailableError(reason)
  g, m, b = groups.shape
  words = jax.ShapeDtypeStruct((g, m // _word_width(m), b), jnp.uint32)
  call = jax.ffi.ffi_call(_KERNEL_TARGET, words, vmap_method='broadcast_all')
  return _unpacked(call(groups.astype(jnp.float32), n=np.int64(n)), m)


def _on_keys(method):
  return lambda groups, n: method(_keys(groups), n)


METHODS = {  # each takes the weights grouped (G, M, B) and N
    'argmax': _on_keys(_mask_by_argmax),
    'extremes': _on_keys(_mask_by_extremes),
    'rank': _on_keys(_mask_by_rank),
    'bisection': _on_keys(_mask_by_bisection),
    'network': _on_keys(_mask_by_network),
    'kernel': _mask_by_kernel,
}


def network_compiles_quickly(n: int, m: int) -> bool:
  """Whether the selection network of N:M compiles in about a second: groups of up to 128, and its list's length
  times M at most 1,024 compare-exchanges (32:64 takes 12 s; groups of 256 exhaust XLA's memory). `choose_method`
  picks no other network."""
  return m <= 128 and min(n, m - n + 1) * m <= 1024


def choose_method(n: int, m: int) -> str:
  """The fastest exact method for N:M on a CPU (scripts/bench_masks.py times them).

  Argmax rounds cost one pass each, so they win for groups of up to 16 keeping one or two; ranking costs M
  fused comparisons per weight, so it wins for groups of up to 8; one round of picking an extreme (1:32,
  31:32, 1:128) costs two passes; the selection network costs one pass of 2 min(N, M - N + 1) operations per
  weight plus a packing pass, so it wins for every other group of up to 128 whose network compiles quickly
  (4:16, 16:32, 4:32, 8:64, 8:128); beyond, ranking still wins for groups of up to 64 with many rounds (32:64),
  picking extremes takes min(N, M - N) rounds and bisection a fixed number of passes. Argmax and ranking fuse
  into the mask's consumers in a train step; the others write the weights' keys out first, and where the C++
  kernel is available (`kernel_unavailable_reason`) it replaces them: one pass that writes only the mask.

  Args:
    n: weights kept per group.
    m: group size.

  Returns:
    A key of METHODS.
  """
  rounds = min(n, m - n)
  if m <= 16 and n <= min(2, m // 4):
    return 'argmax'
  if m <= 8:
    return 'rank'
  if kernel_unavailable_reason(n, m) is None:
    return 'kernel'
  if rounds <= 1:
    return 'extremes'
  if network_compiles_quickly(n, m):
    return 'network'
  if m <= 64 and 4 * rounds >= m:
    return 'rank'
  return 'extremes' if rounds <= 16 else 'bisection'


def nm_mask(w: jax.Array, n: int, m: int, axis: Axes = 0, method: str = 'auto') -> jax.Array:
  """Boolean mask of `w`'s shape keeping exactly `n` of every `m` consecutive entries along `axis`.

  Args:
    w: weights; ranked by |w|.
    n: number kept per group (0 < n <= m).
    m: group size; must divide the grouped length.
    axis: the grouping axis: 0 (the input axis of a Flax Dense kernel, the default) or 1 ("COL",
      the output axis), or a tuple of axes (the contracted axes of a DenseGeneral kernel), flattened in
      row-major order.
    method: 'auto' or one of METHODS; all give the same mask.

  Ties: among equal |w| in a group, the lower index is kept.
  """
  axes = check_groupable(w.shape, n, m, axis)
  if method == 'auto':
    method = choose_method(n, m)
  if method not in METHODS:
    raise ValueError(f'Unknown mask method {method!r}; choose one of {sorted(METHODS)} or "auto".')
  if n == m:
    return jnp.ones(w.shape, bool)
  groups, restore = to_groups(lax.stop_gradient(w), axes, m)
  return restore(_grouped_mask(groups, n, method))


@functools.partial(jax.jit, static_argnums=(1, 2))
def _grouped_mask(groups: jax.Array, n: int, method: str) -> jax.Array:
  """The mask of groups (G, M, B) as its own traced function: a train step whose kernels share a shape and a
  pattern (a Transformer's query, key and value kernels, its layers' feed-forward kernels) traces and lowers
  their mask once and calls it for each, where inlining it would repeat its operations, up to thousands for a
  selection network, for every kernel. XLA inlines the calls, so the compiled step is the same."""
  return METHODS[method](groups, n)


def group_counts(mask: jax.Array, m: int, axis: Axes = 0) -> jax.Array:
  """Kept entries per group, for checks and summaries.

  Args:
    mask: a boolean mask (or any array whose non-zeros count as kept).
    m: group size.
    axis: the grouping axis or axes, as for nm_mask.

  Returns:
    A flat int32 array with one count per group of M.
  """
  axes = _normalize_axes(axis, mask.ndim)
  groups, _ = to_groups(mask, axes, m)
  return groups.sum(axis=1, dtype=jnp.int32).reshape(-1)


def count_changed(mask: jax.Array, previous: jax.Array) -> jax.Array:
  """How many entries of two boolean masks differ.

  XOR and popcount over 32-bit words of four booleans: on CPU, XLA turns `sum(mask != previous)` into a
  tree reduce-window over an int32 copy of the comparison, which is several times slower
  (`scripts/bench_masks.py --flips` measures both). The words are cut from the last axis only, so a sharded
  leading axis stays sharded.

  Args:
    mask: a boolean array.
    previous: a boolean array of the same shape.

  Returns:
    The count as a float32 scalar (exact int32 per kernel; float32 so that summing over the kernels of a
    large model cannot overflow).
  """
  if mask.shape != previous.shape:
    raise ValueError(f'Masks of shapes {mask.shape} and {previous.shape} cannot be compared.')
  if mask.ndim == 0 or mask.shape[-1] % 4:
    return jnp.sum(mask != previous, dtype=jnp.int32).astype(jnp.float32)

  def words(x):
    return lax.bitcast_convert_type(x.astype(jnp.uint8).reshape(x.shape[:-1] + (-1, 4)), jnp.uint32)

  return jnp.sum(lax.population_count(words(mask) ^ words(previous)), dtype=jnp.int32).astype(jnp.float32)
