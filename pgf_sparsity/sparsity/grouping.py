"""Groups of M along a kernel's grouping axes: the one grouping that masks, packed files and the
tensor-core layout share. Array-library agnostic (numpy or JAX), so numpy-only readers import it without JAX."""
import math
from typing import Callable, Tuple


def to_groups(x, axes: Tuple[int, ...], m: int) -> Tuple[object, Callable]:
  """The groups of M along a kernel's grouping axes.

  Works on numpy and JAX arrays alike (it only uses their own transpose and reshape).

  Args:
    x: the kernel (or its mask).
    axes: the grouping axes, sorted; they are moved together and flattened in row-major order.
    m: group size; must divide the grouped length.

  Returns:
    (groups of shape (G, M, B), restore): G groups of M along the grouped axes for each of the B
    positions of the other trailing axes, and the function that turns an array of that shape back into
    x's shape and layout.
  """
  ndim = x.ndim
  contiguous = axes == tuple(range(axes[0], axes[0] + len(axes)))
  perm = tuple(range(ndim)) if contiguous else axes + tuple(a for a in range(ndim) if a not in axes)
  moved = x if contiguous else x.transpose(perm)
  start = axes[0] if contiguous else 0
  g = math.prod(moved.shape[:start])
  grouped_len = math.prod(moved.shape[start:start + len(axes)])
  b = math.prod(moved.shape[start + len(axes):])
  groups = moved.reshape(g * grouped_len // m, m, b)

  def restore(grouped):
    grouped = grouped.reshape(moved.shape)
    return grouped if contiguous else grouped.transpose(tuple(sorted(range(ndim), key=perm.__getitem__)))

  return groups, restore
