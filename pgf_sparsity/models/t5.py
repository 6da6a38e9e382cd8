"""T5 v1.1-style encoder-decoder (Raffel et al. 2020; T5X): RMSNorm, relative position bias buckets,
gated-GELU FF, no biases, tied or untied embeddings. Q, K, V, attention-out and FF layers are
sparse-capable; the shared embedding and the LM head are plain (dense) parameters.

Parameter paths: encoder_layers_{i}/{attention,mlp}/..., decoder_layers_{i}/{self_attention,cross_attention,
mlp}/..., with attention kernels query, key, value, out and FF kernels wi_0, wi_1, wo. Variants: tiny, small,
base, large (v1.1 sizes). Dropout masks are shared along the sequence (T5X). `decode_step` decodes one
position with the decoder's earlier keys and values from a cache (`empty_cache`; decoding.py).
"""
import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from pgf_sparsity.models.common import resolve_fields
from pgf_sparsity.sparsity.layers import SparseDense

# Parameter paths of the sparse-capable layers of one encoder or decoder layer; the stacks differ by
# prefix (encoder_layers_i, decoder_layers_i).
SPARSE_LAYERS = {
    'ff': r'mlp/(wi_0|wi_1|wo)/kernel',
    'qkv': r'\w*attention/(query|key|value)/kernel',
    'attn_out': r'\w*attention/out/kernel',
}
ENCODER, DECODER = r'encoder_layers_\d+/', r'decoder_layers_\d+/'


SIZES = {  # d_model, d_ff, num_heads, head_dim, encoder layers, decoder layers
    'tiny': (128, 256, 4, 32, 2, 2),
    'small': (512, 1024, 6, 64, 8, 8),
    'base': (768, 2048, 12, 64, 12, 12),
    'large': (1024, 2816, 16, 64, 24, 24),
}


def decode_variant(variant: Optional[str]):
  if variant is None:
    return {}
  if variant not in SIZES:
    raise ValueError(f'Unknown T5 variant {variant!r}; choose one of {sorted(SIZES)}.')
  d_model, d_ff, heads, head_dim, enc, dec = SIZES[variant]
  return dict(d_model=d_model, d_ff=d_ff, num_heads=heads, head_dim=head_dim, encoder_layers=enc,
              decoder_layers=dec)


def sequence_dropout(rate: float) -> nn.Dropout:
  """T5X's dropout: one mask per example shared along the sequence (axis -2: positions of hidden states,
  queries of attention weights)."""
  return nn.Dropout(rate, broadcast_dims=(-2,))


def _same_segment(query_segments, key_segments):
  """(batch, 1, q, k): whether query and key positions belong to the same packed example."""
  return (query_segments[:, :, None] == key_segments[:, None, :])[:, None]


class RMSNorm(nn.Module):
  epsilon: float = 1e-6
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    scale = self.param('scale', nn.initializers.ones, (x.shape[-1],))
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.epsilon)
    return (y * scale).astype(self.dtype)


def relative_position_bucket(relative_position, bidirectional: bool, num_buckets: int = 32,
                             max_distance: int = 128):
  """T5's buckets: exact for small distances, log-spaced up to max_distance (numpy, static shapes)."""
  ret = 0
  n = -relative_position
  if bidirectional:
    num_buckets //= 2
    ret += (n < 0).astype(np.int32) * num_buckets
    n = np.abs(n)
  else:
    n = np.maximum(n, 0)
  max_exact = num_buckets // 2
  is_small = n < max_exact
  large = max_exact + (np.log(np.maximum(n, 1) / max_exact) / math.log(max_distance / max_exact)
                       * (num_buckets - max_exact)).astype(np.int32)
  large = np.minimum(large, num_buckets - 1)
  return ret + np.where(is_small, n, large)


class RelativePositionBias(nn.Module):
  num_heads: int
  bidirectional: bool
  num_buckets: int = 32
  max_distance: int = 128

  @nn.compact
  def __call__(self, q_len: int, k_len: int):
    context = np.arange(q_len)[:, None]
    memory = np.arange(k_len)[None, :]
    buckets = relative_position_bucket(memory - context, self.bidirectional, self.num_buckets, self.max_distance)
    # T5X's initialiser of this table (flax's embedding init: std 1/sqrt(num_buckets), truncated normal).
    table = self.param('rel_embedding', nn.linear.default_embed_init, (self.num_heads, self.num_buckets))
    return table[:, buckets][None]  # (1, heads, q, k)


class MultiHeadAttention(nn.Module):
  num_heads: int
  head_dim: int
  dropout: float = 0.0
  dtype: Any = jnp.float32
  scale_logits: bool = False

  @nn.compact
  def __call__(self, inputs_q, inputs_kv, mask, bias, deterministic: bool, cache_index=None):
    """`cache_index` (decoding one position at a time): this position's keys and values are written into
    the 'cache' collection (see empty_cache) at that index, and the query attends to the whole cache."""
    inner = self.num_heads * self.head_dim
    d_model = inputs_q.shape[-1]
    # T5 folds 1/sqrt(head_dim) into the query initialisation, which is equivalent to scaling the logits
    # under Adafactor only; with AdamW, T5X scales the logits instead (scale_logits).
    init = lambda scale: nn.initializers.variance_scaling(scale, 'fan_in', 'normal')
    dense = lambda features, name, scale=1.0: SparseDense(features, use_bias=False, dtype=self.dtype,
                                                          kernel_init=init(scale), name=name)
    split = lambda t: t.reshape(t.shape[:-1] + (self.num_heads, self.head_dim))
    q = split(dense(inner, 'query', 1.0 if self.scale_logits else 1.0 / self.head_dim)(inputs_q))
    k = split(dense(inner, 'key')(inputs_kv))
    v = split(dense(inner, 'value')(inputs_kv))
    if cache_index is not None:
      k, v = (self._cached(name, new, cache_index) for name, new in (('cached_key', k), ('cached_value', v)))
    logits = jnp.einsum('bqhd,bkhd->bhqk', q, k).astype(jnp.float32)
    if self.scale_logits:
      logits = logits / np.sqrt(self.head_dim).astype(np.float32)
    if bias is not None:
      logits = logits + bias
    logits = jnp.where(mask, logits, -1e10)
    weights = sequence_dropout(self.dropout)(jax.nn.softmax(logits, axis=-1), deterministic=deterministic)
    out = jnp.einsum('bhqk,bkhd->bqhd', weights.astype(self.dtype), v)
    out = out.reshape(out.shape[:2] + (inner,))
    return dense(d_model, 'out')(out)


  def _cached(self, name: str, new, index):
    cache = self.variable('cache', name, lambda: None)  # provided by the caller (empty_cache)
    cache.value = jax.lax.dynamic_update_slice(cache.value, new.astype(cache.value.dtype), (0, index, 0, 0))
    return cache.value


class GatedMlp(nn.Module):
  d_ff: int
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, deterministic: bool):
    init = nn.initializers.variance_scaling(1.0, 'fan_in', 'truncated_normal')
    dense = lambda features, name: SparseDense(features, use_bias=False, dtype=self.dtype, kernel_init=init,
                                               name=name)
    h = nn.gelu(dense(self.d_ff, 'wi_0')(x), approximate=True) * dense(self.d_ff, 'wi_1')(x)
    h = sequence_dropout(self.dropout)(h, deterministic=deterministic)
    return dense(x.shape[-1], 'wo')(h)


class _Layer(nn.Module):
  """The sizes an encoder or decoder layer is built from."""
  num_heads: int
  head_dim: int
  d_ff: int
  dropout: float
  dtype: Any
  scale_logits: bool

  def attention(self, name: str) -> 'MultiHeadAttention':
    return MultiHeadAttention(self.num_heads, self.head_dim, self.dropout, self.dtype, self.scale_logits, name=name)


class EncoderLayer(_Layer):

  @nn.compact
  def __call__(self, x, mask, bias, deterministic: bool):
    drop = lambda y: sequence_dropout(self.dropout)(y, deterministic=deterministic)
    h = RMSNorm(dtype=self.dtype, name='pre_attention_norm')(x)
    y = self.attention('attention')(h, h, mask, bias, deterministic)
    x = x + drop(y)
    y = GatedMlp(self.d_ff, self.dropout, self.dtype, name='mlp')(RMSNorm(dtype=self.dtype, name='pre_mlp_norm')(x),
                                                                deterministic)
    return x + drop(y)


class DecoderLayer(_Layer):

  @nn.compact
  def __call__(self, x, encoded, self_mask, cross_mask, bias, deterministic: bool, cache_index=None):
    drop = lambda y: sequence_dropout(self.dropout)(y, deterministic=deterministic)
    h = RMSNorm(dtype=self.dtype, name='pre_self_attention_norm')(x)
    x = x + drop(self.attention('self_attention')(h, h, self_mask, bias, deterministic, cache_index))
    h = RMSNorm(dtype=self.dtype, name='pre_cross_attention_norm')(x)
    x = x + drop(self.attention('cross_attention')(h, encoded, cross_mask, None, deterministic))
    h = RMSNorm(dtype=self.dtype, name='pre_mlp_norm')(x)
    return x + drop(GatedMlp(self.d_ff, self.dropout, self.dtype, name='mlp')(h, deterministic))


class T5(nn.Module):
  vocab_size: int
  d_model: int
  d_ff: int
  num_heads: int
  head_dim: int
  encoder_layers: int
  decoder_layers: int
  dropout: float = 0.0
  tie_embeddings: bool = False
  dtype: Any = jnp.float32
  scale_attention_logits: bool = False  # T5X with AdamW; off for Adafactor (the query init holds the scale)

  def setup(self):
    self.embedding = self.param('token_embedding', nn.initializers.normal(1.0), (self.vocab_size, self.d_model))
    if not self.tie_embeddings:  # a plain (dense) Dense, so that FLOPs counting sees it
      self.lm_head = nn.Dense(self.vocab_size, use_bias=False, name='lm_head',
                              kernel_init=nn.initializers.variance_scaling(1.0, 'fan_in', 'truncated_normal'))
    self.encoder_bias = RelativePositionBias(self.num_heads, bidirectional=True, name='encoder_position_bias')
    self.decoder_bias = RelativePositionBias(self.num_heads, bidirectional=False, name='decoder_position_bias')
    args = (self.num_heads, self.head_dim, self.d_ff, self.dropout, self.dtype, self.scale_attention_logits)
    self.encoder = [EncoderLayer(*args, name=f'encoder_layers_{i}') for i in range(self.encoder_layers)]
    self.decoder = [DecoderLayer(*args, name=f'decoder_layers_{i}') for i in range(self.decoder_layers)]
    self.encoder_norm = RMSNorm(dtype=self.dtype)
    self.decoder_norm = RMSNorm(dtype=self.dtype)
    self.drop = sequence_dropout(self.dropout)

  def encode(self, tokens, train: bool = False, segment_ids=None):
    """`segment_ids` (packed rows): tokens attend within their own example only."""
    x = self.drop(jnp.take(self.embedding, tokens, axis=0).astype(self.dtype), deterministic=not train)
    valid = tokens > 0
    mask = (valid[:, None, :, None] & valid[:, None, None, :])
    if segment_ids is not None:
      mask = mask & _same_segment(segment_ids, segment_ids)
    bias = self.encoder_bias(tokens.shape[1], tokens.shape[1])
    for layer in self.encoder:
      x = layer(x, mask, bias, not train)
    return self.drop(self.encoder_norm(x), deterministic=not train), valid

  def decode(self, encoded, encoder_valid, decoder_inputs, train: bool = False, encoder_segment_ids=None,
             decoder_segment_ids=None):
    length = decoder_inputs.shape[1]
    causal = jnp.tril(jnp.ones((length, length), bool))[None, None]
    cross = jnp.ones((1, 1, length, 1), bool) & encoder_valid[:, None, None, :]
    if decoder_segment_ids is not None:  # packed rows: attention stays within each example
      causal = causal & _same_segment(decoder_segment_ids, decoder_segment_ids)
      cross = cross & _same_segment(decoder_segment_ids, encoder_segment_ids)
    return self._decoder(encoded, cross, decoder_inputs, causal, self.decoder_bias(length, length), train)

  def decode_step(self, encoded, encoder_valid, tokens, index, cache_length: int):
    """Logits of position `index` given its input tokens (batch, 1), with the keys and values of the
    earlier positions from the 'cache' collection (empty_cache; pass mutable=['cache'])."""
    visible = (jnp.arange(cache_length) <= index)[None, None, None, :]
    bias = jax.lax.dynamic_slice_in_dim(self.decoder_bias(cache_length, cache_length), index, 1, axis=2)
    cross = encoder_valid[:, None, None, :]
    return self._decoder(encoded, cross, tokens, visible, bias, False, cache_index=index)

  def _decoder(self, encoded, cross, decoder_inputs, self_mask, bias, train: bool, cache_index=None):
    x = self.drop(jnp.take(self.embedding, decoder_inputs, axis=0).astype(self.dtype), deterministic=not train)
    for layer in self.decoder:
      x = layer(x, encoded, self_mask, cross, bias, not train, cache_index)
    x = self.drop(self.decoder_norm(x), deterministic=not train).astype(jnp.float32)
    if self.tie_embeddings:
      return x @ self.embedding.T / math.sqrt(self.d_model)
    return self.lm_head(x)

  def __call__(self, encoder_tokens, decoder_inputs, *, train: bool = False, encoder_segment_ids=None,
               decoder_segment_ids=None):
    encoded, valid = self.encode(encoder_tokens, train, encoder_segment_ids)
    return self.decode(encoded, valid, decoder_inputs, train, encoder_segment_ids, decoder_segment_ids)

  def empty_cache(self, batch: int, length: int):
    """The 'cache' collection of decode_step for `length` target positions: every decoder layer's
    self-attention keys and values, zeros (a plain method: call it on the unbound model)."""
    zeros = jnp.zeros((batch, length, self.num_heads, self.head_dim), self.dtype)
    return {f'decoder_layers_{i}': {'self_attention': {'cached_key': zeros, 'cached_value': zeros}}
            for i in range(self.decoder_layers)}


DEFAULTS = dict(vocab_size=None, d_model=None, d_ff=None, num_heads=None, head_dim=None, encoder_layers=None,
                decoder_layers=None, dropout=0.0, tie_embeddings=False, dtype='float32',
                scale_attention_logits=False)


def from_config(config) -> T5:
  fields = resolve_fields(config, DEFAULTS, decode_variant, 't5')
  return T5(**fields)
