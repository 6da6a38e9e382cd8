"""What the one training loop trains: how a batch enters the model, the loss, and evaluation sums.

ImageClassification: batches {'image', 'label'(, 'mask')}; softmax (label smoothing) or sigmoid loss,
mixup. Seq2Seq: batches {'inputs', 'targets'(, 'mask')} of padded token ids (0 = padding); teacher-forced
cross entropy over the target tokens (padding weighs 0; label smoothing in training only), token accuracy
and perplexity; greedy decoding and the metrics of decoded text (exact match, BLEU).
"""
from typing import Any, Dict, List, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from pgf_sparsity.tasks import augment
from pgf_sparsity.tasks import glue_metrics


def per_example_loss(logits, labels_onehot, loss_kind: str, label_smoothing: float):
  if loss_kind == 'sigmoid':
    return optax.sigmoid_binary_cross_entropy(logits, labels_onehot).sum(axis=-1)
  n = labels_onehot.shape[-1]
  smoothed = labels_onehot * (1.0 - label_smoothing) + label_smoothing / n
  return optax.softmax_cross_entropy(logits, smoothed)


class ImageClassification:
  name = 'image_classification'

  def __init__(self, config, num_classes: int):
    self.config = config
    self.num_classes = num_classes

  def dummy_inputs(self, input_shapes) -> Tuple[jax.Array, ...]:
    return (jnp.zeros((1,) + tuple(input_shapes['image']), jnp.float32),)

  def train_loss(self, apply_fn, params, batch, rng) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    config = self.config
    dropout_rng, mixup_rng = jax.random.split(rng)
    images = batch['image']
    labels = jax.nn.one_hot(batch['label'], self.num_classes)
    if config.get('random_erasing', 0.0) > 0:
      images = augment.random_erasing(jax.random.fold_in(rng, 2), images, config.random_erasing)
    if config.mixup_alpha > 0 or config.get('cutmix_alpha', 0.0) > 0:
      images, labels = augment.mix(mixup_rng, images, labels, config.mixup_alpha, config.get('cutmix_alpha', 0.0),
                                   config.get('mixup_switch_prob', 0.5))
    logits = apply_fn(params, images, train=True, rngs={'dropout': dropout_rng})
    loss = per_example_loss(logits, labels, config.loss, config.label_smoothing).mean()
    return loss, {'accuracy': jnp.mean(jnp.argmax(logits, -1) == batch['label'])}

  def eval_sums(self, apply_fn, params, batch) -> Dict[str, jax.Array]:
    logits = apply_fn(params, batch['image'], train=False)
    loss = per_example_loss(logits, jax.nn.one_hot(batch['label'], self.num_classes), self.config.loss, 0.0)
    correct = (jnp.argmax(logits, -1) == batch['label']).astype(jnp.float32)
    w = batch['mask']
    return {'loss_sum': jnp.sum(loss * w), 'correct': jnp.sum(correct * w), 'count': jnp.sum(w)}

  @staticmethod
  def finalize(totals: Dict[str, float]) -> Dict[str, float]:
    count = max(totals['count'], 1.0)
    return {'loss': totals['loss_sum'] / count, 'accuracy': totals['correct'] / count}


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
  name = 'seq2seq'

  def __init__(self, config, vocab_size: int, generation_metric: str = ''):
    self.config = config
    self.vocab_size = vocab_size
    self.generation_metric = generation_metric  # '' when the task is not evaluated by decoding

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
    z_loss = self.config.get('z_loss', 0.0)
    if z_loss:
      z_terms = z_loss * jnp.square(jax.nn.logsumexp(logits.astype(jnp.float32), axis=-1)) * weights
      losses = losses + z_terms
      metrics['z_loss'] = z_terms.sum() / tokens
    normalizer = tokens if self.config.get('loss_normalizer', 'tokens') == 'tokens' else float(targets.size)
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

  def generation_metrics(self, predictions: List[str], references: List[str]) -> Dict[str, float]:
    """Exact-match accuracy, plus a GLUE task's official metrics (glue.py), or corpus BLEU (translation,
    sacrebleu) of decoded predictions."""
    if self.generation_metric.startswith('glue/'):  # prefixed: 'accuracy' is the token accuracy here
      out = {'exact_match': float(np.mean([p.strip() == r for p, r in zip(predictions, references)]))}
      task_metrics = glue_metrics.metrics(self.generation_metric.split('/', 1)[1], predictions, references)
      out.update({k if k.startswith('glue_') else f'glue_{k}': v for k, v in task_metrics.items()})
      return out
    import sacrebleu  # pylint: disable=g-import-not-at-top
    # T5 reports BLEU with sacrebleu's international tokenization.
    return {'bleu': float(sacrebleu.corpus_bleu(predictions, [references], tokenize='intl').score)}


def build(config, spec) -> Any:
  """The task of a data spec (see data.base.DataSpec)."""
  if spec.task == 'seq2seq':
    return Seq2Seq(config, spec.output_size, spec.generation_metric)
  return ImageClassification(config, spec.output_size)
