"""Decoding an encoder-decoder one target position at a time, the decoder's earlier keys and values kept in a
cache (the model's `empty_cache`), so that the cost grows linearly with the target length.

  greedy(...)       the most likely token at every position
  beam_search(...)  T5's: `beam_size` hypotheses, finished ones (ending in EOS) ranked by log-probability over
                    the length penalty ((5 + length) / 6) ** alpha, alpha 0.6 in T5

`apply_fn(params, *args, variables=..., **apply_kwargs)` applies the model (its 'encode' and 'decode_step').
"""
import jax
import jax.numpy as jnp

from pgf_sparsity.data.vocab import EOS

_NEG_INF = -1e9


def length_penalty(length, alpha: float):
  return ((5.0 + length) / 6.0) ** alpha


def _step_logits(apply_fn, params, encoded, valid, previous, i, max_length: int, cache):
  """(logits (batch, vocab) of position i given the previous tokens (batch,), the updated cache)."""
  logits, updated = apply_fn(params, encoded, valid, previous[:, None], i, max_length, method='decode_step',
                             variables={'cache': cache}, mutable=['cache'])
  return logits[:, 0].astype(jnp.float32), updated['cache']


def _previous_token(tokens, i):
  """The token before position i along the last axis (0, the start token, at i = 0)."""
  previous = jax.lax.dynamic_index_in_dim(tokens, jnp.maximum(i - 1, 0), axis=-1, keepdims=False)
  return jnp.where(i == 0, 0, previous)


def greedy(apply_fn, params, inputs, max_length: int, cache):
  encoded, valid = apply_fn(params, inputs, method='encode')

  def body(i, carry):
    tokens, cache = carry
    logits, cache = _step_logits(apply_fn, params, encoded, valid, _previous_token(tokens, i), i, max_length, cache)
    return tokens.at[:, i].set(jnp.argmax(logits, axis=-1).astype(jnp.int32)), cache

  tokens = jnp.zeros((inputs.shape[0], max_length), jnp.int32)
  return jax.lax.fori_loop(0, max_length, body, (tokens, cache))[0]


def _top(scores, k: int, *arrays):
  """The k best entries of `scores` (batch, n) and the matching entries of each (batch, n, ...) array."""
  scores, index = jax.lax.top_k(scores, k)
  return (scores, *(jnp.take_along_axis(a, index.reshape(index.shape + (1,) * (a.ndim - 2)), axis=1)
                    for a in arrays))


def beam_search(apply_fn, params, inputs, max_length: int, cache, beam_size: int, alpha: float = 0.6):
  """The best hypothesis per example (batch, max_length), zeros after its EOS. `cache` is the model's
  empty_cache for batch * beam_size rows."""
  batch, k = inputs.shape[0], beam_size
  encoded, valid = apply_fn(params, inputs, method='encode')
  encoded, valid = (jnp.repeat(x, k, axis=0) for x in (encoded, valid))
  alive = jnp.zeros((batch, k, max_length), jnp.int32)
  alive_logp = jnp.tile(jnp.array([0.0] + [_NEG_INF] * (k - 1)), (batch, 1))  # one start, not k copies
  finished = jnp.zeros((batch, k, max_length), jnp.int32)
  finished_score = jnp.full((batch, k), _NEG_INF)

  def body(i, carry):
    alive, alive_logp, finished, finished_score, cache = carry
    previous = _previous_token(alive, i).reshape(batch * k)
    logits, cache = _step_logits(apply_fn, params, encoded, valid, previous, i, max_length, cache)
    log_probs = jax.nn.log_softmax(logits).reshape(batch, k, -1)
    vocab = log_probs.shape[-1]
    candidates = (alive_logp[:, :, None] + log_probs).reshape(batch, k * vocab)
    logp, flat = jax.lax.top_k(candidates, 2 * k)  # enough that k of them do not end here
    origin, token = flat // vocab, (flat % vocab).astype(jnp.int32)
    sequences = jnp.take_along_axis(alive, origin[:, :, None], axis=1).at[:, :, i].set(token)
    ended = token == EOS
    finished_score, finished = _top(
        jnp.concatenate([finished_score, jnp.where(ended, logp / length_penalty(i + 1, alpha), _NEG_INF)], 1),
        k, jnp.concatenate([finished, sequences], 1))
    alive_logp, alive, origin = _top(jnp.where(ended, _NEG_INF, logp), k, sequences, origin)
    rows = (jnp.arange(batch)[:, None] * k + origin).reshape(-1)  # the cache rows the survivors came from
    cache = jax.tree.map(lambda c: c[rows], cache)
    return alive, alive_logp, finished, finished_score, cache

  alive, alive_logp, finished, finished_score, _ = jax.lax.fori_loop(
      0, max_length, body, (alive, alive_logp, finished, finished_score, cache))
  # Hypotheses still alive at max_length compete as they are.
  scores = jnp.concatenate([finished_score, alive_logp / length_penalty(max_length, alpha)], axis=1)
  best = jnp.argmax(scores, axis=1)
  return jnp.take_along_axis(jnp.concatenate([finished, alive], 1), best[:, None, None], axis=1)[:, 0]
