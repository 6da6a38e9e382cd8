"""Vision Transformer (Dosovitskiy et al. 2021) with sparse-capable Q, K, V, attention-out and FF layers.

Parameter paths: Transformer/encoderblock_{i}/{attention/{query,key,value,out}, mlp/{fc1,fc2}}/kernel.
Variants: 'Ti/16', 'S/16', 'B/16', 'L/16', 'H/14' and any patch size after the slash.
"""
import re
from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from pgf_sparsity.models.common import DropPath, MlpBlock, resolve_fields
from pgf_sparsity.sparsity.layers import SparseDense

SIZES = {  # width, depth, mlp_dim, num_heads
    'Ti': (192, 12, 768, 3),
    'S': (384, 12, 1536, 6),
    'B': (768, 12, 3072, 12),
    'L': (1024, 24, 4096, 16),
    'H': (1280, 32, 5120, 16),
}


def decode_variant(variant: Optional[str]):
  if variant is None:
    return {}
  match = re.fullmatch(r'(Ti|S|B|L|H)/(\d+)', variant)
  if not match:
    raise ValueError(f'Unknown ViT variant {variant!r}; expected e.g. "B/16" with size in {sorted(SIZES)}.')
  width, depth, mlp_dim, heads = SIZES[match.group(1)]
  return dict(width=width, depth=depth, mlp_dim=mlp_dim, num_heads=heads, patch_size=int(match.group(2)))


class SelfAttention(nn.Module):
  num_heads: int
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, deterministic: bool):
    width = x.shape[-1]
    if width % self.num_heads:
      raise ValueError(f'width {width} is not divisible by num_heads {self.num_heads}.')
    head_dim = width // self.num_heads
    init = dict(kernel_init=nn.initializers.xavier_uniform(), dtype=self.dtype)
    split = lambda t: t.reshape(t.shape[:-1] + (self.num_heads, head_dim))
    q = split(SparseDense(width, name='query', **init)(x))
    k = split(SparseDense(width, name='key', **init)(x))
    v = split(SparseDense(width, name='value', **init)(x))
    logits = jnp.einsum('bqhd,bkhd->bhqk', q, k) / jnp.sqrt(head_dim).astype(q.dtype)
    weights = nn.softmax(logits.astype(jnp.float32), axis=-1).astype(self.dtype)
    weights = nn.Dropout(self.dropout)(weights, deterministic=deterministic)
    out = jnp.einsum('bhqk,bkhd->bqhd', weights, v).reshape(x.shape[:-1] + (width,))
    return SparseDense(width, name='out', **init)(out)


class EncoderBlock(nn.Module):
  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  attention_dropout: float = 0.0
  drop_path: float = 0.0
  dtype: Any = jnp.float32
  exact_gelu: bool = False

  @nn.compact
  def __call__(self, x, deterministic: bool):
    y = nn.LayerNorm(dtype=self.dtype)(x)
    y = SelfAttention(self.num_heads, self.attention_dropout, self.dtype, name='attention')(y, deterministic)
    y = nn.Dropout(self.dropout)(y, deterministic=deterministic)
    x = x + DropPath(self.drop_path)(y, deterministic)
    y = nn.LayerNorm(dtype=self.dtype)(x)
    y = MlpBlock(self.mlp_dim, self.dropout, self.dtype, self.exact_gelu, name='mlp')(y, deterministic)
    return x + DropPath(self.drop_path)(y, deterministic)


class ViT(nn.Module):
  num_classes: int
  width: int
  depth: int
  mlp_dim: int
  num_heads: int
  patch_size: int
  pool: str = 'token'            # 'token' (class token) or 'gap' (mean over patches)
  dropout: float = 0.0
  attention_dropout: float = 0.0
  stochastic_depth: float = 0.0  # rate at the last block, linear from 0
  dtype: Any = jnp.float32
  exact_gelu: bool = False       # erf GELU, as timm's ViT (the paper's reference); tanh as big_vision

  @nn.compact
  def __call__(self, images, *, train: bool = False):
    if self.pool not in ('token', 'gap'):
      raise ValueError(f"ViT pool must be 'token' or 'gap', got {self.pool!r}.")
    p = self.patch_size
    if images.shape[1] % p or images.shape[2] % p:
      raise ValueError(f'Image size {images.shape[1:3]} is not divisible by patch size {p}.')
    x = nn.Conv(self.width, (p, p), strides=(p, p), padding='VALID', dtype=self.dtype,
                name='embedding')(images.astype(self.dtype))
    b, h, w, c = x.shape
    x = x.reshape(b, h * w, c)
    if self.pool == 'token':
      cls = self.param('cls', nn.initializers.zeros, (1, 1, c))
      x = jnp.concatenate([jnp.tile(cls, (b, 1, 1)).astype(x.dtype), x], axis=1)
    pos = self.param('pos_embedding', nn.initializers.normal(0.02), (1, x.shape[1], c))
    x = nn.Dropout(self.dropout)(x + pos.astype(x.dtype), deterministic=not train)
    x = Encoder(self.depth, self.num_heads, self.mlp_dim, self.dropout, self.attention_dropout,
                self.stochastic_depth, self.dtype, self.exact_gelu, name='Transformer')(x, train)
    x = x[:, 0] if self.pool == 'token' else x.mean(axis=1)
    return nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros, name='head')(x.astype(jnp.float32))


class Encoder(nn.Module):
  depth: int
  num_heads: int
  mlp_dim: int
  dropout: float
  attention_dropout: float
  stochastic_depth: float
  dtype: Any
  exact_gelu: bool

  @nn.compact
  def __call__(self, x, train: bool):
    for i in range(self.depth):
      rate = self.stochastic_depth * i / max(self.depth - 1, 1)
      x = EncoderBlock(self.num_heads, self.mlp_dim, self.dropout, self.attention_dropout, rate, self.dtype,
                       self.exact_gelu, name=f'encoderblock_{i}')(x, not train)
    return nn.LayerNorm(dtype=self.dtype, name='encoder_norm')(x)


DEFAULTS = dict(num_classes=None, width=None, depth=None, mlp_dim=None, num_heads=None, patch_size=None,
                pool='token', dropout=0.0, attention_dropout=0.0, stochastic_depth=0.0, dtype='float32',
                exact_gelu=False)


def from_config(config) -> ViT:
  fields = resolve_fields(config, DEFAULTS, decode_variant, 'vit')
  return ViT(**fields)
