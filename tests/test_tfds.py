"""The tfds (ImageNet) paths, on tfds mock data: pipelines, RandAugment, and a few training steps.

TensorFlow is imported by the tests that use it, not by the file: under `--dist loadfile` every pytest worker
collects every file, and only the worker that runs this one needs TensorFlow.
"""
import os
import sys
import time

import jax
import numpy as np
import pytest

from pgf_sparsity import config_lib
from pgf_sparsity.training import train

sys.path.insert(0, os.path.dirname(__file__))
from helpers import load_config, mock_tfds  # noqa: E402


def _images_block(given):
  """A tfds image dataset block completed with the defaults, as the training loop hands it over."""
  return config_lib.complete_block('dataset', given, 'tfds')


@pytest.fixture
def mock_imagenet():
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  with mock_tfds(num_examples=24, policy=tfds.testing.MockPolicy.USE_CODE):
    yield


def test_pipeline_shapes_and_padding(mock_imagenet):
  from pgf_sparsity.data import tfds_images  # pylint: disable=g-import-not-at-top
  data = tfds_images.TfdsImages(_images_block({'tfds_name': 'imagenet2012', 'image_size': 32,
                                 'randaugment': {'num_layers': 2, 'magnitude': 15},
                                 'num_train_examples': 24, 'num_eval_examples': 24}), 8, 10, 0)
  batch = data.train_batch(0)
  assert batch['image'].shape == (8, 32, 32, 3) and batch['image'].dtype == np.float32
  assert -1.0 <= batch['image'].min() and batch['image'].max() <= 1.0
  assert batch['label'].shape == (8,) and data.spec.output_size == 1000
  evals = list(data.eval_batches())  # the mock's 24 validation examples in batches of 10
  assert [float(b['mask'].sum()) for b in evals] == [10, 10, 4]
  assert all(b['image'].shape == (10, 32, 32, 3) for b in evals)


def test_training_batches_are_a_function_of_the_step(mock_imagenet):
  from pgf_sparsity.data import tfds_images  # pylint: disable=g-import-not-at-top
  config = {'tfds_name': 'imagenet2012', 'image_size': 32, 'randaugment': {'num_layers': 2, 'magnitude': 9},
            'num_train_examples': 24, 'num_eval_examples': 24}
  first, second = (tfds_images.TfdsImages(_images_block(config), 8, 8, 0) for _ in range(2))
  later = [first.train_batch(s) for s in (0, 1, 2, 5)]
  again = second.train_batch(5)  # a fresh pipeline, straight to step 5: what a resumed run reads
  np.testing.assert_array_equal(again['image'], later[-1]['image'])
  np.testing.assert_array_equal(again['label'], later[-1]['label'])
  assert not np.array_equal(later[0]['image'], later[1]['image'])
  # Step 3 starts the second epoch of the 24 examples: a new order, not the first epoch again.
  epoch_two = first.train_batch(3)
  assert not np.array_equal(epoch_two['image'], later[0]['image'])


def test_dataset_without_tfds_access_says_how_to_convert_it(mock_imagenet, monkeypatch):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from pgf_sparsity.data import tfds_access  # pylint: disable=g-import-not-at-top

  def tfrecord_only(*args, **kwargs):
    raise NotImplementedError('Random access data source for file format tfrecord is not supported.')

  monkeypatch.setattr(tfds, 'data_source', tfrecord_only)
  monkeypatch.setattr(tfds.core.DatasetBuilder, 'is_prepared', lambda self: True)  # prepared, as TFRecord
  with pytest.raises(ValueError, match='without random access.*convert_format.*array_record'):
    tfds_access.data_source('imagenet2012', 'train', None)


def test_missing_dataset_fails_fast_with_a_message(tmp_path):
  from pgf_sparsity.data import tfds_images  # pylint: disable=g-import-not-at-top
  start = time.time()
  with pytest.raises(FileNotFoundError, match='not prepared.*No download is attempted'):
    tfds_images.TfdsImages(_images_block({'tfds_name': 'imagenet2012', 'tfds_data_dir': str(tmp_path),
                                          'num_train_examples': 10, 'num_eval_examples': 10}), 8, 8, 0)
  assert time.time() - start < 30


def test_randaugment_ops_keep_shape_and_dtype():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from pgf_sparsity.data import randaugment  # pylint: disable=g-import-not-at-top
  image = tf.constant(np.random.RandomState(0).randint(0, 256, (20, 24, 3)), tf.uint8)
  for op in randaugment.OPS:
    out = op(image, 10.0)
    assert out.shape == image.shape and out.dtype == tf.uint8, op.__name__
  np.testing.assert_array_equal(randaugment.invert(randaugment.invert(image, 0), 0), image)
  np.testing.assert_array_equal(randaugment.solarize(image, 0.0), image)
  np.testing.assert_array_equal(randaugment.solarize(image, 10.0), 255 - image)  # threshold 0: all inverted
  seed = tf.constant([3, 4], tf.int64)
  out = randaugment.randaugment(image, seed, 2, 15)
  assert out.shape == image.shape
  np.testing.assert_array_equal(randaugment.randaugment(image, seed, 2, 15), out)  # a function of the seed
  others = [randaugment.randaugment(image, tf.constant([s, 0], tf.int64), 2, 15) for s in range(8)]
  assert any(not np.array_equal(o, out) for o in others)
  with pytest.raises(ValueError, match='magnitude'):
    randaugment.randaugment(image, seed, 2, -1.0)
  # timm's magnitude std: each op's magnitude drawn around the given one, so the same choices of op give
  # other images; with std 0 the result is the fixed-magnitude one.
  np.testing.assert_array_equal(randaugment.randaugment(image, seed, 2, 9, magnitude_std=0.0),
                                randaugment.randaugment(image, seed, 2, 9))
  varied = [randaugment.randaugment(image, tf.constant([s, 1], tf.int64), 1, 9, magnitude_std=0.5)
            for s in range(12)]
  fixed = [randaugment.randaugment(image, tf.constant([s, 1], tf.int64), 1, 9) for s in range(12)]
  assert any(not np.array_equal(v, f) for v, f in zip(varied, fixed))


def test_randaugment_magnitudes_follow_timm_and_big_vision_scale():
  from pgf_sparsity.data import randaugment  # pylint: disable=g-import-not-at-top
  # 10 is each op's published maximum (timm auto_augment, the TF TPU / big_vision RandAugment).
  assert randaugment.rotate_degrees(10) == 30.0 and randaugment.rotate_degrees(5) == 15.0
  assert randaugment.shear_factor(10) == pytest.approx(0.3) and randaugment.translate_fraction(10) == 0.45
  assert randaugment.enhance_change(10) == pytest.approx(0.9)
  assert [int(randaugment.posterize_bits(m)) for m in (0.0, 5.0, 10.0)] == [4, 2, 1]
  assert [int(randaugment.solarize_threshold(m)) for m in (0.0, 5.0, 10.0)] == [256, 128, 0]
  assert [int(randaugment.solarize_add_amount(m)) for m in (0.0, 5.0, 10.0)] == [0, 55, 110]
  # timm clips the magnitude at 10 by default; big_vision extrapolates (15 = 1.5x the maxima).
  assert randaugment.effective_level(15) == 10.0 and randaugment.effective_level(9) == 9.0
  assert randaugment.effective_level(15, None) == 15.0 and randaugment.rotate_degrees(15) == 45.0
  ra = load_config('vit_i1k').dataset.randaugment
  assert (ra.num_layers, ra.magnitude, ra.magnitude_max) == (2, 15, 10.0)


def test_paper_config_matches_the_spec():
  config = load_config('vit_i1k')
  assert config.model.variant == 'B/16' and config.model.dtype == 'bfloat16'
  assert config.model.exact_gelu  # timm's ViT, which the reference trained
  swin = load_config('swinv2_i1k').model
  assert swin.exact_gelu and swin.norm_eps == 1e-5
  assert config.sparsity.recipe == 'mdgf_exponential' and config.sparsity.alpha == 1e-4
  assert config.sparsity.targets.to_dict() == {'ff': {'regex': r'.*/mlp/fc[12]/kernel', 'n': 1, 'm': 32}}
  assert config.sparsity.flow == 'ste'
  assert config.loss == 'sigmoid' and config.mixup_alpha == 0.5 and config.num_epochs == 352
  assert config.optimizer.learning_rate == pytest.approx(1e-3)
  assert load_config('vit_i1k', 'batch=1024').optimizer.learning_rate == pytest.approx(5e-4)


@pytest.mark.usefixtures('shared_compiled_steps')
def test_preempted_run_on_tfds_resumes_bit_identical(mock_imagenet, tmp_path):
  config = load_config('vit_i1k', 'runlocal')
  # A save every step, each finishing in the background while the pipeline reads: with tfds's own mock
  # (see helpers.mock_tfds) this failed most runs.
  config.total_steps, config.num_epochs, config.checkpoint_every_steps = 4, None, 1
  full, _ = train.train_and_evaluate(config, str(tmp_path / 'full'))
  train.train_and_evaluate(config, str(tmp_path / 'split'), max_steps_this_run=2)
  resumed, _ = train.train_and_evaluate(config, str(tmp_path / 'split'))  # a new pipeline, from step 2
  assert int(resumed.step) == 4
  for a, b in zip(jax.tree.leaves(full.params), jax.tree.leaves(resumed.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_text_batches_are_a_function_of_the_step():
  from pgf_sparsity.data import tfds_text  # pylint: disable=g-import-not-at-top
  config = {'tfds_name': 'c4/en', 'inputs_length': 64, 'num_eval_examples': 4}
  with mock_tfds(num_examples=12):
    first = tfds_text.TfdsText(config_lib.complete_block('dataset', config, 'tfds_text'), 4, 4, 0)
    batches = [first.train_batch(s) for s in range(4)]
    again = tfds_text.TfdsText(config_lib.complete_block('dataset', config, 'tfds_text'), 4, 4, 0).train_batch(3)
  for key in ('inputs', 'targets'):
    np.testing.assert_array_equal(again[key], batches[3][key])
  assert not np.array_equal(batches[0]['inputs'], batches[3]['inputs'])  # epoch two: reshuffled


def test_c4_rows_are_the_steps_documents_concatenated_split_and_packed():
  from pgf_sparsity.data import span_corruption, tfds_text  # pylint: disable=g-import-not-at-top
  config = {'tfds_name': 'c4/en', 'inputs_length': 64, 'num_eval_examples': 4, 'documents_per_row': 8.0}
  with mock_tfds(num_examples=40):
    data = tfds_text.TfdsText(config_lib.complete_block('dataset', config, 'tfds_text'), 4, 4, 0)
    batch = data.train_batch(2)
    documents = [data.vocab.encode(tfds_text._text(e['text'])) for e in data._train.examples(2)]
    eval_batch = next(data.eval_batches())
  raw = span_corruption.raw_length(64)
  assert data.lengths == {'inputs': 64, 'targets': span_corruption.corrupted_lengths(raw)[1]}
  stream = np.concatenate(documents)
  recovered = []
  for row in range(4):
    for segment in range(1, int(batch['inputs_segment_ids'][row].max()) + 1):
      inputs = batch['inputs'][row][batch['inputs_segment_ids'][row] == segment]
      targets = batch['targets'][row][batch['targets_segment_ids'][row] == segment]
      recovered.append(span_corruption.uncorrupt(inputs, targets, data.vocab))
  recovered = np.concatenate(recovered)
  assert len(stream) > 4 * raw and len(recovered) == 4 * raw  # mock documents are short: many per row
  np.testing.assert_array_equal(recovered, stream[:len(recovered)])  # in order, across document boundaries
  assert eval_batch['inputs'].shape == (4, 64) and eval_batch['mask'].sum() > 0
