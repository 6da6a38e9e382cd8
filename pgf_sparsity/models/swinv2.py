"""Swin Transformer V2 (Liu et al. 2022): shifted windows, scaled cosine attention, log-spaced continuous
position bias, residual post-norm, patch merging; Q, K, V, attention-out and FF layers sparse-capable.

Parameter paths: stage_{s}_block_{b}/{attention/{query,key,value,out}, mlp/{fc1,fc2}}/kernel.
Variants: 'T', 'S', 'B', 'L' with an optional window, e.g. 'T/8' (window 8) or 'B/16'.
"""
import re
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from pgf_sparsity.models.common import DropPath, MlpBlock, resolve_fields
from pgf_sparsity.sparsity.layers import SparseDense

SIZES = {  # embed_dim, depths, num_heads
    'T': (96, (2, 2, 6, 2), (3, 6, 12, 24)),
    'S': (96, (2, 2, 18, 2), (3, 6, 12, 24)),
    'B': (128, (2, 2, 18, 2), (4, 8, 16, 32)),
    'L': (192, (2, 2, 18, 2), (6, 12, 24, 48)),
}


def decode_variant(variant: Optional[str]):
  if variant is None:
    return {}
  match = re.fullmatch(r'(T|S|B|L)(?:/(\d+))?', variant)
  if not match:
    raise ValueError(f'Unknown SwinV2 variant {variant!r}; expected e.g. "T/8" with size in {sorted(SIZES)}.')
  embed_dim, depths, heads = SIZES[match.group(1)]
  out = dict(embed_dim=embed_dim, depths=depths, num_heads=heads)
  if match.group(2):
    out['window_size'] = int(match.group(2))
  return out


def relative_coords_table(window: int) -> np.ndarray:
  """Log-spaced relative coordinates, (2w-1)^2 x 2, as in SwinV2's continuous position bias."""
  coords = np.arange(-(window - 1), window, dtype=np.float32)
  table = np.stack(np.meshgrid(coords, coords, indexing='ij'), axis=-1).reshape(-1, 2)
  table = table / max(window - 1, 1) * 8.0
  return np.sign(table) * np.log2(np.abs(table) + 1.0) / np.log2(8.0)


def relative_position_index(window: int) -> np.ndarray:
  coords = np.stack(np.meshgrid(np.arange(window), np.arange(window), indexing='ij')).reshape(2, -1)
  rel = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0) + (window - 1)
  return rel[..., 0] * (2 * window - 1) + rel[..., 1]


def shift_attention_mask(height: int, width: int, window: int, shift: int) -> np.ndarray:
  """(num_windows, w*w, w*w) additive mask that stops attention across the shifted-window seams."""
  region = np.zeros((height, width), np.int32)
  count = 0
  for hs in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
    for ws in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
      region[hs, ws] = count
      count += 1
  windows = region.reshape(height // window, window, width // window, window).transpose(0, 2, 1, 3)
  windows = windows.reshape(-1, window * window)
  return np.where(windows[:, :, None] != windows[:, None, :], -100.0, 0.0).astype(np.float32)


class WindowAttention(nn.Module):
  num_heads: int
  window: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask: Optional[np.ndarray]):
    b, n, c = x.shape  # b = batch * windows, n = window * window
    head_dim = c // self.num_heads
    split = lambda t: t.reshape(b, n, self.num_heads, head_dim)
    q = split(SparseDense(c, dtype=self.dtype, name='query')(x))
    k = split(SparseDense(c, use_bias=False, dtype=self.dtype, name='key')(x))
    v = split(SparseDense(c, dtype=self.dtype, name='value')(x))
    normalize = lambda t: t / jnp.maximum(jnp.linalg.norm(t, axis=-1, keepdims=True), 1e-12)
    logits = jnp.einsum('bqhd,bkhd->bhqk', normalize(q.astype(jnp.float32)), normalize(k.astype(jnp.float32)))
    logit_scale = self.param('logit_scale', nn.initializers.constant(np.log(10.0)), (self.num_heads, 1, 1))
    logits = logits * jnp.exp(jnp.minimum(logit_scale, np.log(100.0)))
    hidden = nn.relu(nn.Dense(512, name='cpb_fc1')(jnp.asarray(relative_coords_table(self.window))))
    table = nn.Dense(self.num_heads, use_bias=False, name='cpb_fc2')(hidden)
    bias = table[relative_position_index(self.window).reshape(-1)].reshape(n, n, self.num_heads)
    logits = logits + 16.0 * nn.sigmoid(bias.transpose(2, 0, 1))[None]
    if mask is not None:
      nw = mask.shape[0]
      logits = logits.reshape(b // nw, nw, self.num_heads, n, n) + jnp.asarray(mask)[None, :, None]
      logits = logits.reshape(b, self.num_heads, n, n)
    weights = nn.softmax(logits, axis=-1).astype(self.dtype)
    out = jnp.einsum('bhqk,bkhd->bqhd', weights, v.astype(self.dtype)).reshape(b, n, c)
    return SparseDense(c, dtype=self.dtype, name='out')(out)


class SwinBlock(nn.Module):
  num_heads: int
  window: int
  shift: int
  mlp_ratio: float = 4.0
  dropout: float = 0.0
  drop_path: float = 0.0
  dtype: Any = jnp.float32
  norm_eps: float = 1e-6
  exact_gelu: bool = False

  @nn.compact
  def __call__(self, x, deterministic: bool):
    b, h, w, c = x.shape
    win, shift = self.window, self.shift
    y = jnp.roll(x, (-shift, -shift), axis=(1, 2)) if shift else x
    y = y.reshape(b, h // win, win, w // win, win, c).transpose(0, 1, 3, 2, 4, 5).reshape(-1, win * win, c)
    mask = shift_attention_mask(h, w, win, shift) if shift else None
    y = WindowAttention(self.num_heads, win, self.dtype, name='attention')(y, mask)
    y = y.reshape(b, h // win, w // win, win, win, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
    y = jnp.roll(y, (shift, shift), axis=(1, 2)) if shift else y
    norm = lambda name: nn.LayerNorm(epsilon=self.norm_eps, dtype=self.dtype, name=name)
    x = x + DropPath(self.drop_path)(norm('norm1')(y), deterministic)
    y = MlpBlock(int(c * self.mlp_ratio), self.dropout, self.dtype, self.exact_gelu, name='mlp')(x, deterministic)
    return x + DropPath(self.drop_path)(norm('norm2')(y), deterministic)


class PatchMerging(nn.Module):
  dtype: Any = jnp.float32
  norm_eps: float = 1e-6

  @nn.compact
  def __call__(self, x):
    b, h, w, c = x.shape
    x = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 4, 2, 5).reshape(b, h // 2, w // 2, 4 * c)
    x = nn.Dense(2 * c, use_bias=False, dtype=self.dtype, name='reduction')(x)
    return nn.LayerNorm(epsilon=self.norm_eps, dtype=self.dtype, name='norm')(x)


class SwinV2(nn.Module):
  num_classes: int
  embed_dim: int
  depths: Sequence[int]
  num_heads: Sequence[int]
  window_size: int = 8
  patch_size: int = 4
  mlp_ratio: float = 4.0
  dropout: float = 0.0
  stochastic_depth: float = 0.0
  dtype: Any = jnp.float32
  norm_eps: float = 1e-6     # timm's Swin (the paper's reference) uses 1e-5
  exact_gelu: bool = False   # timm's Swin uses the erf GELU

  @nn.compact
  def __call__(self, images, *, train: bool = False):
    p = self.patch_size
    x = nn.Conv(self.embed_dim, (p, p), strides=(p, p), padding='VALID', dtype=self.dtype,
                name='patch_embed')(images.astype(self.dtype))
    x = nn.LayerNorm(epsilon=self.norm_eps, dtype=self.dtype, name='patch_norm')(x)
    x = nn.Dropout(self.dropout)(x, deterministic=not train)
    total = sum(self.depths)
    index = 0
    for s, (depth, heads) in enumerate(zip(self.depths, self.num_heads)):
      if s > 0:
        x = PatchMerging(self.dtype, self.norm_eps, name=f'merge_{s}')(x)
      resolution = x.shape[1]
      window = min(self.window_size, resolution)
      if resolution % window or x.shape[2] % window:
        raise ValueError(f'Stage {s} resolution {x.shape[1:3]} is not divisible by window {window}.')
      for i in range(depth):
        shift = window // 2 if (i % 2 and resolution > window) else 0
        rate = self.stochastic_depth * index / max(total - 1, 1)
        x = SwinBlock(heads, window, shift, self.mlp_ratio, self.dropout, rate, self.dtype, self.norm_eps,
                      self.exact_gelu, name=f'stage_{s}/block_{i}'.replace('/', '_'))(x, not train)
        index += 1
    x = nn.LayerNorm(epsilon=self.norm_eps, dtype=self.dtype, name='norm')(x).mean(axis=(1, 2))
    return nn.Dense(self.num_classes, name='head')(x.astype(jnp.float32))


DEFAULTS = dict(num_classes=None, embed_dim=None, depths=None, num_heads=None, window_size=8, patch_size=4,
                mlp_ratio=4.0, dropout=0.0, stochastic_depth=0.0, dtype='float32', norm_eps=1e-6, exact_gelu=False)


def from_config(config) -> SwinV2:
  fields = resolve_fields(config, DEFAULTS, decode_variant, 'swinv2')
  fields['depths'] = tuple(fields['depths'])
  fields['num_heads'] = tuple(fields['num_heads'])
  return SwinV2(**fields)
