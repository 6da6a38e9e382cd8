"""Sequence to sequence: batches {'inputs', 'targets'(, 'mask', segment ids of packed rows)} of padded token
ids (0 = padding); teacher-forced cross entropy over the target tokens (padding weighs 0; label smoothing
in training only), token accuracy and perplexity; for tasks evaluated on decoded text, greedy or beam-search
decoding with the model's key-value cache and the corpus metrics of the decoded text (GLUE, BLEU)."""
from typing import Any, Callable, Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from pgf_sparsity.tasks import decoding
from pgf_sparsity.tasks import glue_metrics


def shift_right(targets, segment_ids=None):
  """Decoder inputs: the targets moved one step right behind the start token 0; in packed rows
  (`segment_ids`), every example starts with its own 0."""
  shifted = jnp.pad(targets, ((0, 0), (1, 0)))[:, :-1]
  if segment_ids is None:
    return shifted
  starts = segment_ids != jnp.pad(segment_ids, ((0, 0), (1, 0)))[:, :-1]
  return jnp.where(starts, 0, shifted)


def _seq2seq_args(batch):
  """(encoder tokens, decoder inputs), {segment ids of packed rows, when the batch has them}."""
  packed = 'inputs_segment_ids' in batch
  kwargs = ({'encoder_segment_ids': batch['inputs_segment_ids'], 'decoder_segment_ids': batch['targets_segment_ids']}
            if packed else {})
  decoder_inputs = shift_right(batch['targets'], batch['targets_segment_ids'] if packed else None)
  return (batch['inputs'], decoder_inputs), kwargs


class Seq2Seq:
  """The task of an encoder-decoder model. `generation_metric` ('' when the task is not evaluated on
  decoded text) and `decode`'s needs, the targets' length and the model's `empty_cache(rows, length)`,
  come from the data spec and the model."""

  def __init__(self, config, vocab_size: int, generation_metric: str = '', targets_length: int = 0,
               empty_cache: Optional[Callable[[int, int], Any]] = None):
    self.config = config
    self.vocab_size = vocab_size
    self.generation_metric = generation_metric
    self.targets_length = targets_length
    self.empty_cache = empty_cache

  @property
  def decodes(self) -> bool:
    return bool(self.generation_metric)

  def dummy_inputs(self, input_shapes) -> Tuple[jax.Array, ...]:
    return (jnp.ones((1,) + tuple(input_shapes['inputs']), jnp.int32),
            jnp.ones((1,) + tuple(input_shapes['targets']), jnp.int32))

  def _token_losses(self, logits, targets, label_smoothing: float = 0.0):
    weights = (targets > 0).astype(jnp.float32)
    if label_smoothing:
      smoothed = optax.smooth_labels(jax.nn.one_hot(targets, logits.shape[-1]), label_smoothing)
      losses = optax.softmax_cross_entropy(logits.astype(jnp.float32), smoothed)
    else:
      losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
    correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
    return losses * weights, correct * weights, weights

  def train_loss(self, apply_fn, params, batch, rng):
    """Token cross entropy plus T5X's z-loss (z_loss * log(Z)^2 per target token), summed and divided by the
    real target tokens ('tokens') or by every target position of the batch ('padded', T5X's fixed factor)."""
    targets = batch['targets']
    args, kwargs = _seq2seq_args(batch)
    logits = apply_fn(params, *args, train=True, rngs={'dropout': rng}, **kwargs)
    losses, correct, weights = self._token_losses(logits, targets, self.config.label_smoothing)
    tokens = jnp.maximum(weights.sum(), 1.0)
    metrics = {'accuracy': correct.sum() / tokens}
    z_loss = self.config.z_loss
    if z_loss:
      z_terms = z_loss * jnp.square(jax.nn.logsumexp(logits.astype(jnp.float32), axis=-1)) * weights
      losses = losses + z_terms
      metrics['z_loss'] = z_terms.sum() / tokens
    normalizer = tokens if self.config.loss_normalizer == 'tokens' else float(targets.size)
    return losses.sum() / normalizer, metrics

  def eval_sums(self, apply_fn, params, batch):
    args, kwargs = _seq2seq_args(batch)
    logits = apply_fn(params, *args, train=False, **kwargs)
    losses, correct, weights = self._token_losses(logits, batch['targets'])
    w = batch['mask'][:, None]
    return {'loss_sum': jnp.sum(losses * w), 'correct': jnp.sum(correct * w), 'count': jnp.sum(weights * w)}

  @staticmethod
  def finalize(totals: Dict[str, float]) -> Dict[str, float]:
    count = max(totals['count'], 1.0)
    loss = totals['loss_sum'] / count
    return {'loss': loss, 'accuracy': totals['correct'] / count, 'perplexity': float(jnp.exp(min(loss, 50.0)))}

  def decode(self, apply_fn, params, batch) -> jax.Array:
    """Token ids (batch, targets length) decoded from batch['inputs']: greedy with one beam
    (config.beam_size), else T5's beam search with config.length_penalty."""
    beam_size = self.config.beam_size
    cache = self.empty_cache(batch['inputs'].shape[0] * beam_size, self.targets_length)
    if beam_size == 1:
      return decoding.greedy(apply_fn, params, batch['inputs'], self.targets_length, cache)
    return decoding.beam_search(apply_fn, params, batch['inputs'], self.targets_length, cache, beam_size,
                                self.config.length_penalty)

  def corpus_metrics(self, predictions: List[str], references: List[str]) -> Dict[str, float]:
    """Exact-match accuracy, plus a GLUE task's official metrics (glue_metrics.py), or corpus BLEU (translation,
    sacrebleu) of decoded predictions."""
    if self.generation_metric.startswith('glue/'):  # prefixed: 'accuracy' is the token accuracy here
      out = {'exact_match': float(np.mean([p.strip() == r for p, r in zip(predictions, references)]))}
      task_metrics = glue_metrics.metrics(self.generation_metric.split('/', 1)[1], predictions, references)
      out.update({k if k.startswith('glue_') else f'glue_{k}': v for k, v in task_metrics.items()})
      return out
    import sacrebleu  # pylint: disable=g-import-not-at-top
    # T5 reports BLEU with sacrebleu's international tokenization.
    return {'bleu': float(sacrebleu.corpus_bleu(predictions, [references], tokenize='intl').score)}
