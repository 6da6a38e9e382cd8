"""Image classification: batches {'image', 'label'(, 'mask')}; softmax (label smoothing) or sigmoid loss,
Mixup / CutMix and random erasing in the train step; evaluation sums of loss and correct predictions."""
from typing import Dict, Tuple

import jax
import jax.numpy as jnp
import optax

from pgf_sparsity.tasks import augment


def per_example_loss(logits, labels_onehot, loss_kind: str, label_smoothing: float):
  if loss_kind == 'sigmoid':
    return optax.sigmoid_binary_cross_entropy(logits, labels_onehot).sum(axis=-1)
  n = labels_onehot.shape[-1]
  smoothed = labels_onehot * (1.0 - label_smoothing) + label_smoothing / n
  return optax.softmax_cross_entropy(logits, smoothed)


class ImageClassification:
  """The task of an image classifier over `num_classes` classes."""
  decodes = False

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
    if config.random_erasing > 0:
      images = augment.random_erasing(jax.random.fold_in(rng, 2), images, config.random_erasing)
    if config.mixup_alpha > 0 or config.cutmix_alpha > 0:
      images, labels = augment.mix(mixup_rng, images, labels, config.mixup_alpha, config.cutmix_alpha,
                                   config.mixup_switch_prob)
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
