"""tfds image pipelines (ImageNet-1k and any tfds image-classification dataset) with tf.data.

Never downloads: a dataset that is not prepared in `tfds_data_dir` fails at once with a message.
Training: step-addressable (tfds_access.py: the batch of step s is a function of seed, s and process, so
resumption is exact); decode + random-resized crop (area 0.08-1) + flip + optional RandAugment, all drawn
from each example's own seed by TensorFlow's stateless ops, in one compiled graph per batch. Mixup happens
in the train step. Evaluation: resize to size/0.875 and centre crop; every process yields the same number
of batches, padded with mask 0.
"""
import math
from typing import Any, Mapping

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from pgf_sparsity.data import randaugment as randaugment_lib
from pgf_sparsity.data import tfds_access
from pgf_sparsity.data.base import DataSpec

_KNOWN_SIZES = {('imagenet2012', 'train'): 1_281_167, ('imagenet2012', 'validation'): 50_000}


def _num_examples(builder, split: str, name: str, override: int) -> int:
  if override:
    return override
  try:
    return builder.info.splits[split].num_examples
  except (KeyError, ValueError):
    if (name, split) in _KNOWN_SIZES:
      return _KNOWN_SIZES[(name, split)]
    raise ValueError(f'Cannot tell the size of {name}/{split}; set dataset.num_train_examples / '
                     'num_eval_examples.') from None


def random_resized_crop(image_bytes, size: int, seed):
  shape = tf.image.extract_jpeg_shape(image_bytes)
  begin, crop, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape, tf.zeros([0, 0, 4], tf.float32), seed, area_range=(0.08, 1.0), aspect_ratio_range=(3 / 4, 4 / 3),
      min_object_covered=0.0, max_attempts=10, use_image_if_no_bounding_boxes=True)
  y, x, _ = tf.unstack(begin)
  h, w, _ = tf.unstack(crop)
  image = tf.image.decode_and_crop_jpeg(image_bytes, tf.stack([y, x, h, w]), channels=3)
  return tf.cast(tf.clip_by_value(tf.round(tf.image.resize(image, [size, size])), 0, 255), tf.uint8)


def center_crop(image_bytes, size: int, crop_fraction: float = 0.875):
  image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
  h, w = tf.cast(tf.shape(image)[0], tf.float32), tf.cast(tf.shape(image)[1], tf.float32)
  scale = (size / crop_fraction) / tf.minimum(h, w)
  new_h, new_w = tf.cast(tf.round(h * scale), tf.int32), tf.cast(tf.round(w * scale), tf.int32)
  image = tf.image.resize(image, [new_h, new_w])
  top, left = (new_h - size) // 2, (new_w - size) // 2
  return tf.cast(tf.clip_by_value(tf.round(image[top:top + size, left:left + size]), 0, 255), tf.uint8)


def _to_model(image):
  return tf.cast(image, tf.float32) / 127.5 - 1.0


def _batch_augmentation(size: int, flip: bool, randaugment: Mapping[str, Any]):
  """(encoded images [b], seeds [b, 2]) -> float images [b, size, size, 3], traced once."""

  def one(encoded, seed):
    crop_seed, flip_seed, augment_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    image = random_resized_crop(encoded, size, crop_seed)
    if flip:
      image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    if randaugment.num_layers:
      image = randaugment_lib.randaugment(image, augment_seed, randaugment.num_layers, randaugment.magnitude,
                                          randaugment.magnitude_max, randaugment.magnitude_std)
    return _to_model(image)

  def batch(encoded, seeds):
    return tf.map_fn(lambda x: one(*x), (encoded, seeds), fn_output_signature=tf.float32, parallel_iterations=16)

  return tf.function(batch, input_signature=[tf.TensorSpec([None], tf.string), tf.TensorSpec([None, 2], tf.int64)])


class TfdsImages:

  def __init__(self, config: Mapping[str, Any], global_batch: int, eval_batch: int, seed: int):
    name = config.tfds_name
    self.size = int(config.image_size)
    builder = tfds.builder(name, data_dir=config.tfds_data_dir or None)
    train_split, eval_split = config.train_split, config.eval_split
    self.image_shape = (self.size, self.size, 3)
    n_train = _num_examples(builder, train_split, name, config.num_train_examples)
    self.num_eval = _num_examples(builder, eval_split, name, config.num_eval_examples)
    self.spec = DataSpec('image_classification', {'image': self.image_shape},
                         builder.info.features['label'].num_classes, max(n_train // global_batch, 1))
    processes = jax.process_count()
    self.local_batch, self.local_eval_batch = global_batch // processes, eval_batch // processes
    self.eval_batch = eval_batch

    data_dir = config.tfds_data_dir or None
    source = tfds_access.data_source(name, train_split, data_dir, {'image': tfds.decode.SkipDecoding()})
    self._train = tfds_access.StepIndexed(source, global_batch, seed)
    self._augment = _batch_augmentation(self.size, config.flip, config.randaugment)
    if config.num_eval_examples:
      eval_split = f'{eval_split}[:{self.num_eval}]'
    self._eval_source = (builder, name, eval_split)

  def train_batch(self, step: int):
    examples = self._train.examples(step)
    images = self._augment(tf.constant([e['image'] for e in examples]), np.stack([e['seed'] for e in examples]))
    return {'image': images.numpy(), 'label': np.asarray([e['label'] for e in examples], np.int32)}

  def eval_batches(self):
    builder, name, split = self._eval_source
    size = self.size

    def eval_map(example):
      return {'image': _to_model(center_crop(example['image'], size)),
              'label': tf.cast(example['label'], tf.int32), 'mask': tf.constant(1.0, tf.float32)}

    ds = tfds_access.eval_dataset(builder, name, split, {'image': tfds.decode.SkipDecoding()})
    ds = ds.map(eval_map, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(self.local_eval_batch).prefetch(tf.data.AUTOTUNE)
    # Every process runs the same number of (jitted, collective) eval steps.
    num_batches = math.ceil(self.num_eval / self.eval_batch)
    produced = 0
    for batch in tfds.as_numpy(ds):
      if produced == num_batches:
        break
      yield _pad(batch, self.local_eval_batch)
      produced += 1
    empty = {'image': np.zeros((self.local_eval_batch,) + self.image_shape, np.float32),
             'label': np.zeros(self.local_eval_batch, np.int32), 'mask': np.zeros(self.local_eval_batch, np.float32)}
    for _ in range(num_batches - produced):
      yield empty


def _pad(batch, size: int):
  short = size - len(batch['label'])
  if not short:
    return batch
  return {k: np.concatenate([v, np.zeros((short,) + v.shape[1:], v.dtype)]) for k, v in batch.items()}
