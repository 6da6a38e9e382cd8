"""Linen layers whose kernel can be N:M sparse: the forward uses W * (m + (1 - m) * beta).

A layer is sparse for a call when the 'sparsity' variable collection holds `mask` (bool, kernel-shaped)
and `beta` (scalar) for it; otherwise it is an ordinary dense layer. The gradient to W is straight-through
(dL/dW = dL/dW~ for every entry), so that the optax transformation in `gradient_flow` alone decides what
reaches pruned weights. Masks are computed once per step outside the model (see `recipe.py`).
"""
import math
from typing import Any, Callable, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

SPARSITY = 'sparsity'           # input collection: {'mask', 'beta'} per sparse layer
SPARSE_LAYERS = 'sparse_layers'  # sown when a mask is applied; lets a setup check catch unused masks

default_kernel_init = nn.initializers.lecun_normal()


@jax.custom_vjp
def mix_straight_through(w: jax.Array, mask: jax.Array, beta: jax.Array) -> jax.Array:
  """The effective weight W * (m + (1 - m) beta), with the straight-through gradient.

  Args:
    w: the dense weights.
    mask: boolean, w's shape; True where the weight is kept.
    beta: scalar, the value of pruned weights' mask (1: dense, 0: binary N:M).

  Returns:
    The effective weight. Its gradient reaches `w` unchanged (dL/dW = dL/dW~ at every entry, so that the
    optax transformation `nm_gradient_flow` alone decides what pruned weights receive), none `mask` and
    `beta`.
  """
  return jnp.where(mask, w, beta.astype(w.dtype) * w)


def _mix_fwd(w, mask, beta):
  return mix_straight_through(w, mask, beta), (mask, beta)


def _mix_bwd(residuals, g):
  mask, beta = residuals
  return g, None, jnp.zeros_like(beta)


mix_straight_through.defvjp(_mix_fwd, _mix_bwd)


def effective_kernel(module: nn.Module, kernel: jax.Array) -> jax.Array:
  """The kernel a sparse layer computes with for this call.

  Args:
    module: the layer, bound to its variables.
    kernel: its 'params' kernel.

  Returns:
    `mix_straight_through(kernel, mask, beta)` when the 'sparsity' collection holds the layer's mask and
    beta (and the layer records that it applied them), else `kernel` unchanged.
  """
  if not module.has_variable(SPARSITY, 'mask'):
    return kernel
  mask = module.get_variable(SPARSITY, 'mask')
  beta = module.get_variable(SPARSITY, 'beta')
  if mask.shape != kernel.shape:
    raise ValueError(f'{module.path}: mask shape {mask.shape} does not match kernel shape {kernel.shape}.')
  module.sow(SPARSE_LAYERS, 'mask_applied', True)
  return mix_straight_through(kernel, mask, jnp.asarray(beta, jnp.float32))


class SparseDenseGeneral(nn.Module):
  """nn.DenseGeneral with an optionally N:M-masked kernel of shape (contracted dims..., features...).

  The contracted axes are the kernel's leading `len(axis)` axes: N:M groups run along them, flattened in
  row-major order (configure the target with `in_ndim=len(axis)`).
  """
  features: Union[int, Sequence[int]]
  axis: Union[int, Sequence[int]] = -1
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32
  precision: Any = None
  kernel_init: Callable = default_kernel_init
  bias_init: Callable = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x):
    features = (self.features,) if isinstance(self.features, int) else tuple(self.features)
    axes = (self.axis,) if isinstance(self.axis, int) else tuple(self.axis)
    axes = tuple(a % x.ndim for a in axes)
    in_shape = tuple(x.shape[a] for a in axes)
    fan_in, fan_out = math.prod(in_shape), math.prod(features)

    def init_kernel(rng, shape, dtype):
      flat = self.kernel_init(rng, (fan_in, fan_out), dtype)
      return flat.reshape(shape)

    kernel = self.param('kernel', init_kernel, in_shape + features, self.param_dtype)
    kernel = effective_kernel(self, kernel)
    bias = self.param('bias', self.bias_init, features, self.param_dtype) if self.use_bias else None
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    # One 2-D matmul, batch axes flattened: on CPU, XLA's gradient of a dot_general over several batch axes
    # runs 2-3x slower than the same GEMMs (scripts/bench_train_step.py).
    batch_axes = tuple(a for a in range(x.ndim) if a not in axes)
    rows = jnp.transpose(x, batch_axes + axes).reshape(-1, fan_in)
    y = lax.dot_general(rows, kernel.reshape(fan_in, fan_out), (((1,), (0,)), ((), ())), precision=self.precision)
    y = y.reshape(tuple(x.shape[a] for a in batch_axes) + features)
    return y + bias if bias is not None else y


class SparseDense(SparseDenseGeneral):
  """nn.Dense with an optionally N:M-masked kernel of shape (in, features); groups run along `in`: the
  general layer contracting the last axis (same parameters and initialisation as nn.Dense)."""
