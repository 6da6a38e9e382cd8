import numpy as np
import pytest

from pgf_sparsity.data import images
from pgf_sparsity.data import offline


def test_fashion_mnist_loads_the_real_files():
  train_x, train_y = offline.fashion_mnist('train')
  test_x, test_y = offline.fashion_mnist('test')
  assert train_x.shape == (60000, 28, 28, 1) and test_x.shape == (10000, 28, 28, 1)
  assert train_x.dtype == np.uint8 and 0 < train_x.mean() < 255
  assert (np.bincount(train_y) == 6000).all() and (np.bincount(test_y) == 1000).all()


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path, monkeypatch):
  monkeypatch.setattr(offline, 'FASHION_MNIST_DIRS', ())
  with pytest.raises(FileNotFoundError, match='scripts/get_data.sh'):
    offline.fashion_mnist('train', data_dir=str(tmp_path))


def test_digits_are_sklearns_digits_read_without_importing_sklearn():
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  reference = load_digits()
  pixels, target = offline._sklearn_digits()  # pylint: disable=protected-access
  np.testing.assert_array_equal(pixels, reference.images)
  np.testing.assert_array_equal(target, reference.target)
  (train_x, train_y), (test_x, test_y) = offline.digits('train'), offline.digits('test')
  assert train_x.shape == (1400, 8, 8, 1) and test_x.shape == (397, 8, 8, 1) and train_x.dtype == np.uint8
  assert train_x.max() == 255 and sorted(np.concatenate([train_y, test_y])) == sorted(reference.target)
  with pytest.raises(ValueError, match="'train' or 'test'"):
    offline.digits('validation')


def test_batches_are_a_pure_function_of_the_step_and_cover_each_epoch_once():
  x = np.arange(50, dtype=np.uint8).reshape(50, 1, 1, 1)
  y = np.arange(50, dtype=np.int32)
  pipe = images.ArrayPipeline(x, y, global_batch=10, seed=3)
  again = images.ArrayPipeline(x, y, global_batch=10, seed=3)
  np.testing.assert_array_equal(pipe.batch(7)['label'], again.batch(7)['label'])
  epoch = np.concatenate([pipe.batch(s)['label'] for s in range(5)])
  assert sorted(epoch) == list(range(50))
  assert not np.array_equal(pipe.batch(0)['label'], pipe.batch(5)['label'])  # a fresh order each epoch
  odd = images.ArrayPipeline(x, y, global_batch=15, seed=3)  # batches that straddle epochs
  assert len(odd.batch(3)['label']) == 15


def test_eval_batches_pad_the_last_batch_with_mask_zero():
  x = np.zeros((25, 2, 2, 1), np.uint8)
  y = np.ones(25, np.int32)
  batches = list(images.eval_batches(x, y, 10))
  assert [b['mask'].sum() for b in batches] == [10, 10, 5]
  assert all(b['image'].shape == (10, 2, 2, 1) for b in batches)
