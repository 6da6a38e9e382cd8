"""Image input pipelines. Training batches of in-memory datasets are a pure function of the step (so a
resumed run sees exactly the data it would have seen); tfds pipelines stream with tf.data.

Every pipeline yields host-local numpy batches {'image': float32 (b, h, w, c), 'label': int32 (b,)} and,
for evaluation, 'mask' (1 for real examples, 0 for padding).
"""
from typing import Any, Dict, Iterator, Mapping

import jax
import numpy as np

from pgf_sparsity.data import offline
from pgf_sparsity.data.base import DataSpec

OFFLINE = {'fashion_mnist': offline.fashion_mnist, 'digits': offline.digits}
NUM_CLASSES = {'fashion_mnist': 10, 'digits': 10}


class ArrayPipeline:
  """An in-memory dataset; batch(step) is deterministic given (seed, step, process)."""

  def __init__(self, images: np.ndarray, labels: np.ndarray, global_batch: int, seed: int,
               flip: bool = False, pad: int = 0):
    if global_batch % jax.process_count():
      raise ValueError(f'batch_size {global_batch} must be divisible by the {jax.process_count()} processes.')
    self.images, self.labels = images, labels
    self.global_batch, self.seed, self.flip, self.pad = global_batch, seed, flip, pad
    self.local_batch = global_batch // jax.process_count()
    self.steps_per_epoch = max(len(images) // global_batch, 1)
    self._orders: Dict[int, np.ndarray] = {}

  def _epoch_order(self, epoch: int) -> np.ndarray:
    """The epoch's permutation, computed once (the batches of two epochs are in use at a time)."""
    if epoch not in self._orders:
      if len(self._orders) >= 2:
        self._orders.pop(min(self._orders))
      self._orders[epoch] = np.random.default_rng([self.seed, epoch]).permutation(len(self.images))
    return self._orders[epoch]

  def batch(self, step: int) -> Dict[str, np.ndarray]:
    start = step * self.global_batch
    n = len(self.images)
    epoch, offset = divmod(start, n)
    order = self._epoch_order(epoch)
    idx = order[offset:offset + self.global_batch]
    while len(idx) < self.global_batch:  # the batch runs into the next epoch
      epoch += 1
      idx = np.concatenate([idx, self._epoch_order(epoch)[:self.global_batch - len(idx)]])
    mine = slice(jax.process_index() * self.local_batch, (jax.process_index() + 1) * self.local_batch)
    images = normalize(self.images[idx[mine]])
    if self.flip or self.pad:
      images = self._augment(images, step, mine)
    return {'image': images, 'label': self.labels[idx[mine]]}

  def _augment(self, images: np.ndarray, step: int, mine: slice) -> np.ndarray:
    """Random crops and flips drawn for the whole global batch, so that they do not depend on how many
    processes share it; `mine` is this process's part."""
    rng = np.random.default_rng([self.seed, step, 0, 1])
    if self.pad:
      _, h, w, _ = images.shape
      padded = np.pad(images, ((0, 0), (self.pad, self.pad), (self.pad, self.pad), (0, 0)), mode='reflect')
      dy, dx = rng.integers(0, 2 * self.pad + 1, size=(2, self.global_batch))[:, mine]
      images = np.stack([padded[i, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(len(images))])
    if self.flip:
      flips = rng.random(self.global_batch)[mine] < 0.5
      images = np.where(flips[:, None, None, None], images[:, :, ::-1], images)
    return images

  def __iter__(self):
    raise TypeError('ArrayPipeline is indexed by step: use batch(step).')


def normalize(images: np.ndarray) -> np.ndarray:
  return (images.astype(np.float32) / 127.5) - 1.0


def eval_batches(images: np.ndarray, labels: np.ndarray, global_batch: int) -> Iterator[Dict[str, np.ndarray]]:
  """This process's share of every evaluation batch; the last one padded, with mask 0 on padding."""
  local = global_batch // jax.process_count()
  for start in range(0, len(images), global_batch):
    img = images[start:start + global_batch]
    lab = labels[start:start + global_batch]
    mask = np.ones(len(img), np.float32)
    short = global_batch - len(img)
    if short:
      img = np.concatenate([img, np.zeros((short,) + img.shape[1:], img.dtype)])
      lab = np.concatenate([lab, np.zeros(short, lab.dtype)])
      mask = np.concatenate([mask, np.zeros(short, np.float32)])
    lo = jax.process_index() * local
    yield {'image': normalize(img[lo:lo + local]), 'label': lab[lo:lo + local], 'mask': mask[lo:lo + local]}


class SyntheticImages:
  """Fixed random images and labels: for benchmarks, where input cost must not count."""

  def __init__(self, config: Mapping[str, Any], global_batch: int, eval_batch: int, seed: int):
    size, channels = config.image_size, config.channels
    self.image_shape = (size, size, channels)
    self.spec = DataSpec('image_classification', {'image': self.image_shape}, config.num_classes,
                         max(config.num_train_examples // global_batch, 1))
    rng = np.random.default_rng(seed)
    local, local_eval = global_batch // jax.process_count(), eval_batch // jax.process_count()
    self._train = {'image': rng.uniform(-1, 1, (local,) + self.image_shape).astype(np.float32),
                   'label': rng.integers(0, self.spec.output_size, local).astype(np.int32)}
    self._eval = {'image': rng.uniform(-1, 1, (local_eval,) + self.image_shape).astype(np.float32),
                  'label': rng.integers(0, self.spec.output_size, local_eval).astype(np.int32),
                  'mask': np.ones(local_eval, np.float32)}

  def train_batch(self, step: int):
    del step
    return self._train

  def eval_batches(self):
    yield self._eval


class OfflineImages:
  """Train and eval pipelines for an offline dataset named in the config."""

  def __init__(self, config: Mapping[str, Any], global_batch: int, eval_batch: int, seed: int):
    name = config.name
    if name not in OFFLINE:
      raise ValueError(f'Unknown offline dataset {name!r}; choose one of {sorted(OFFLINE)} or "tfds".')
    load = OFFLINE[name]
    kwargs = {'data_dir': config.data_dir} if name == 'fashion_mnist' else {}
    train_images, train_labels = load('train', **kwargs)
    limit = config.train_examples or len(train_images)
    self.train = ArrayPipeline(train_images[:limit], train_labels[:limit], global_batch, seed,
                               flip=config.flip, pad=config.pad)
    self.eval_images, self.eval_labels = load('test', **kwargs)
    eval_limit = config.eval_examples or len(self.eval_images)
    self.eval_images, self.eval_labels = self.eval_images[:eval_limit], self.eval_labels[:eval_limit]
    self.eval_batch = eval_batch
    self.spec = DataSpec('image_classification', {'image': tuple(train_images.shape[1:])}, NUM_CLASSES[name],
                         self.train.steps_per_epoch)

  def train_batch(self, step: int):
    return self.train.batch(step)

  def eval_batches(self):
    return eval_batches(self.eval_images, self.eval_labels, self.eval_batch)
