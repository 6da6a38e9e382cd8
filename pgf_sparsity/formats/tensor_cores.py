"""2:4 kernels in the form NVIDIA's sparse tensor cores take, and an inference path that uses them.

The sparse operand of a 2:4 sparse matmul is a PyTorch-layout weight (out, in) whose groups of 4 run along
`in`, stored as its kept values (out, in / 2) plus metadata (out, in / 16) uint16: every 16 weights (4 groups)
give 8 positions of 2 bits, the j-th kept weight's position in its group at bits 2j..2j+1. That is the layout
of `jax.experimental.sparse.nm` (`nm_pack` / `nm_spmm`, lowered to `mma.sp` on sm80 and sparse `wgmma` on
sm90), which `matmul` uses where it exists and the device is such a GPU; elsewhere it computes the same
product densely. Packing is numpy only.
"""
import importlib
from typing import Dict, Tuple

import numpy as np

GROUPS_PER_WORD = 4  # 4 groups x 2 positions x 2 bits = 16 bits


def qualifies(shape, n: int, m: int, axes, in_ndim: int) -> bool:
  """Whether a Flax kernel can take the 2:4 tensor-core form: 2-D, 2:4 along `in`, `in` a multiple of 16."""
  return (len(shape) == 2 and (n, m) == (2, 4) and tuple(axes) == (0,) and in_ndim == 1
          and shape[0] % (4 * GROUPS_PER_WORD) == 0)


def pack(weight: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """(values (out, in/2), metadata (out, in/16) uint16) of a PyTorch-layout weight that is exactly 2:4 along
  `in` (its non-zeros, plus the lowest-index zeros of groups with fewer than 2)."""
  out_features, in_features = weight.shape
  groups = weight.reshape(out_features, in_features // 4, 4)
  if ((groups != 0).sum(-1) > 2).any():
    raise ValueError('the weight is not 2:4 along its input axis')
  positions = np.sort(np.argsort(groups == 0, axis=-1, kind='stable')[..., :2], axis=-1)  # (out, in/4, 2)
  values = np.take_along_axis(groups, positions, axis=-1).reshape(out_features, in_features // 2)
  digits = positions.reshape(out_features, in_features // 16, 8).astype(np.uint32)
  metadata = (digits << (2 * np.arange(8, dtype=np.uint32))).sum(-1).astype(np.uint16)
  return values, metadata


def unpack(values: np.ndarray, metadata: np.ndarray) -> np.ndarray:
  """The dense PyTorch-layout weight (zeros at pruned weights) of `pack`'s output."""
  out_features = values.shape[0]
  in_features = values.shape[1] * 2
  if metadata.dtype != np.uint16 or metadata.shape != (out_features, in_features // 16):
    raise ValueError(f'metadata {metadata.dtype} {metadata.shape} does not fit values of shape {values.shape}')
  digits = (metadata.astype(np.uint32)[..., None] >> (2 * np.arange(8, dtype=np.uint32))) & 3
  positions = digits.reshape(out_features, in_features // 4, 2).astype(np.int64)
  if (positions[..., 0] >= positions[..., 1]).any():
    raise ValueError('the metadata names one position twice, or positions out of order')
  dense = np.zeros((out_features, in_features // 4, 4), values.dtype)
  np.put_along_axis(dense, positions, values.reshape(out_features, in_features // 4, 2), axis=-1)
  return dense.reshape(out_features, in_features)


def available() -> bool:
  """Whether this JAX has the 2:4 sparse matmul and the default device is a GPU with sparse tensor cores
  (compute capability 8.0 or newer)."""
  import jax  # pylint: disable=g-import-not-at-top
  try:
    importlib.import_module('jax.experimental.sparse.nm')
  except ImportError:
    return False
  device = jax.devices()[0]
  return device.platform == 'gpu' and float(getattr(device, 'compute_capability', '0')) >= 8.0


def matmul(x, values, metadata, use_tensor_cores: bool):
  """x (..., in) times the 2:4 weight (out, in) transposed: (..., out)."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  if use_tensor_cores:
    nm = importlib.import_module('jax.experimental.sparse.nm')
    flat = x.reshape(-1, x.shape[-1]).astype(values.dtype)
    y = nm.nm_spmm(flat, values, metadata, dimension_numbers=(((1,), (1,)), ((), ())), sparse_operand_idx=1,
                   output_dtype=jnp.float32)
    return y.reshape(x.shape[:-1] + (values.shape[0],))
  positions = (metadata[..., None].astype(jnp.uint32) >> (2 * jnp.arange(8, dtype=jnp.uint32))) & 3
  positions = positions.reshape(values.shape[0], -1, 2)
  onehot = (positions[..., None] == jnp.arange(4)).astype(values.dtype)  # (out, in/4, 2, 4)
  dense = jnp.einsum('ogk,ogkp->ogp', values.reshape(values.shape[0], -1, 2), onehot).reshape(values.shape[0], -1)
  return x @ dense.T.astype(x.dtype)


def intercepted_apply(model, variables, packed: Dict[str, Tuple[np.ndarray, np.ndarray]], *args, **kwargs):
  """model.apply where every SparseDense whose kernel path is in `packed` ({path: (values, metadata)})
  computes with the 2:4 form (tensor cores where `available()`), its kernel parameter unused."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  from pgf_sparsity.sparsity.layers import SparseDense  # pylint: disable=g-import-not-at-top
  use_tensor_cores = available()
  modules = {path.rsplit('/', 1)[0]: arrays for path, arrays in packed.items()}

  def interceptor(next_fun, call_args, call_kwargs, context):
    module = context.module
    path = '/'.join(module.path)
    if context.method_name != '__call__' or path not in modules or not isinstance(module, SparseDense):
      return next_fun(*call_args, **call_kwargs)
    values, metadata = modules[path]
    y = matmul(call_args[0], values, metadata, use_tensor_cores)
    bias = module.get_variable('params', 'bias') if module.use_bias else None
    return y + bias if bias is not None else y

  with nn.intercept_methods(interceptor):
    return model.apply(variables, *args, **kwargs)
