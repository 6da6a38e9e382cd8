"""Pieces shared by the vision Transformers."""
from typing import Any, Callable, Dict, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from pgf_sparsity.sparsity.layers import SparseDense


DTYPES = ('float32', 'bfloat16', 'float16')
# Parameter paths of the sparse-capable layers that the vision models share (MlpBlock, attention names).
SPARSE_TARGETS = {
    'ff': r'.*/mlp/fc[12]/kernel',
    'qkv': r'.*/attention/(query|key|value)/kernel',
    'attn_out': r'.*/attention/out/kernel',
}


def resolve_fields(config: Mapping[str, Any], defaults: Dict[str, Any],
                   decode_variant: Callable[[Optional[str]], Dict[str, Any]], model_name: str) -> Dict[str, Any]:
  """A model's fields: its `defaults` (the one place they are set), the sizes of `config`'s variant
  (decode_variant), then the keys `config` sets explicitly; unknown keys are an error."""
  config = dict(config)
  config.pop('name', None)
  fields = dict(defaults)
  fields.update(decode_variant(config['variant'] if 'variant' in config else None))
  unknown = set(config) - set(fields) - {'variant'}
  if unknown:
    raise ValueError(f'Unknown model keys for {model_name}: {sorted(unknown)}; known: '
                     f'{sorted(set(fields) | {"variant"})}.')
  fields.update({k: v for k, v in config.items() if k != 'variant' and v is not None})
  missing = [k for k, v in fields.items() if v is None]
  if missing:
    raise ValueError(f'{model_name}: give a model.variant or set {missing}.')
  if fields['dtype'] not in DTYPES:
    raise ValueError(f'model.dtype must be one of {DTYPES}, got {fields["dtype"]!r}.')
  fields['dtype'] = jnp.dtype(fields['dtype'])
  return fields


class MlpBlock(nn.Module):
  """fc1 -> GELU -> dropout -> fc2: the FF layers that the paper sparsifies. GELU is the tanh approximation
  (flax's and big_vision's default) unless `exact_gelu` (the erf form of PyTorch and timm)."""
  mlp_dim: int
  dropout: float = 0.0
  dtype: Any = jnp.float32
  exact_gelu: bool = False

  @nn.compact
  def __call__(self, x, deterministic: bool):
    width = x.shape[-1]
    init = dict(kernel_init=nn.initializers.xavier_uniform(), bias_init=nn.initializers.normal(1e-6))
    x = SparseDense(self.mlp_dim, dtype=self.dtype, name='fc1', **init)(x)
    x = nn.gelu(x, approximate=not self.exact_gelu)
    x = nn.Dropout(self.dropout)(x, deterministic=deterministic)
    x = SparseDense(width, dtype=self.dtype, name='fc2', **init)(x)
    return nn.Dropout(self.dropout)(x, deterministic=deterministic)


class DropPath(nn.Module):
  """Stochastic depth: drops the whole residual branch per example."""
  rate: float

  @nn.compact
  def __call__(self, x, deterministic: bool):
    if deterministic or self.rate == 0.0:
      return x
    keep = 1.0 - self.rate
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    mask = jax.random.bernoulli(self.make_rng('dropout'), keep, shape)
    return jnp.where(mask, x / keep, 0.0).astype(x.dtype)
