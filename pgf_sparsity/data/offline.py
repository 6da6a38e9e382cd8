"""Offline image datasets that ship with packages: Fashion-MNIST (Debian) and sklearn digits."""
import gzip
import importlib.util
import os
from typing import Tuple

import numpy as np

FASHION_MNIST_DIRS = ('/usr/share/datasets/fashion-mnist',)
_FILES = {'train': ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz'),
          'test': ('t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz')}


def default_data_dir() -> str:
  return os.environ.get('PGF_DATA_DIR', os.path.join(os.path.dirname(__file__), '..', '..', 'data_cache'))


def _read_idx(path: str) -> np.ndarray:
  with gzip.open(path, 'rb') as f:
    data = f.read()
  ndim = data[3]
  dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], 'big') for i in range(ndim)]
  return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def find_fashion_mnist(data_dir: str = '') -> str:
  candidates = [os.path.join(data_dir or default_data_dir(), 'fashion-mnist'), *FASHION_MNIST_DIRS]
  for d in candidates:
    if all(os.path.exists(os.path.join(d, f)) for f in _FILES['train'] + _FILES['test']):
      return d
  raise FileNotFoundError(f'Fashion-MNIST not found in {candidates}; run `bash scripts/get_data.sh` '
                          '(fetches the Debian package dataset-fashion-mnist, no root needed).')


def fashion_mnist(split: str, data_dir: str = '') -> Tuple[np.ndarray, np.ndarray]:
  """uint8 images (n, 28, 28, 1) and int32 labels of the 'train' (60k) or 'test' (10k) split."""
  if split not in _FILES:
    raise ValueError(f'Fashion-MNIST split must be one of {sorted(_FILES)}, got {split!r}.')
  d = find_fashion_mnist(data_dir)
  images_file, labels_file = _FILES[split]
  images = _read_idx(os.path.join(d, images_file))[..., None]
  labels = _read_idx(os.path.join(d, labels_file)).astype(np.int32)
  return images, labels


def _sklearn_digits() -> Tuple[np.ndarray, np.ndarray]:
  """What sklearn's `load_digits()` gives as (images, target), read from the file scikit-learn ships, without
  importing sklearn: its import, for one file, would be a large part of a short run's start-up."""
  spec = importlib.util.find_spec('sklearn')
  if spec is None or spec.origin is None:
    raise FileNotFoundError('The digits dataset ships with scikit-learn; install it (pip install scikit-learn).')
  table = np.loadtxt(os.path.join(os.path.dirname(spec.origin), 'datasets', 'data', 'digits.csv.gz'), delimiter=',')
  return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(int)


def digits(split: str) -> Tuple[np.ndarray, np.ndarray]:
  """sklearn's 8x8 digits as uint8 (n, 8, 8, 1) images; a fixed 1400/397 train/test split."""
  pixels, target = _sklearn_digits()
  images = np.round(pixels * (255.0 / 16.0)).astype(np.uint8)[..., None]
  labels = target.astype(np.int32)
  perm = np.random.RandomState(0).permutation(len(images))
  images, labels = images[perm], labels[perm]
  if split == 'train':
    return images[:1400], labels[:1400]
  if split == 'test':
    return images[1400:], labels[1400:]
  raise ValueError(f"digits split must be 'train' or 'test', got {split!r}.")
