"""Text pipelines for the encoder-decoder: span corruption on the offline Shakespeare corpus (the default)
and, for users with the data, tfds c4/en span corruption, GLUE as text-to-text classification and WMT
translation (see tfds_text.py).

Batches: {'inputs', 'targets'} int32 token ids padded with 0 to fixed lengths, 'mask' on eval batches.
Training batches of the offline corpus are a pure function of (seed, step, process).
"""
import math
from typing import Any, Dict, Iterator, Mapping

import jax
import numpy as np

from pgf_sparsity.data import shakespeare
from pgf_sparsity.data import span_corruption
from pgf_sparsity.data import vocab as vocab_lib


def span_corruption_lengths(chunk: int, noise_density: float, mean_span: float):
  """Exact (inputs, targets) lengths, EOS included, of a corrupted chunk (span counts are deterministic)."""
  mask = span_corruption.noise_mask(chunk, np.random.default_rng(0), noise_density, mean_span)
  noise = int(mask.sum())
  spans = int((mask & ~np.concatenate([[False], mask[:-1]])).sum())
  return chunk - noise + spans + 1, noise + spans + 1


def pad_to(rows, length: int) -> np.ndarray:
  out = np.zeros((len(rows), length), np.int32)
  for i, row in enumerate(rows):
    if len(row) > length:
      raise ValueError(f'a sequence of {len(row)} tokens does not fit the length {length}')
    out[i, :len(row)] = row
  return out


class ShakespeareSpanCorruption:
  task = 'seq2seq'

  def __init__(self, config: Mapping[str, Any], global_batch: int, eval_batch: int, seed: int):
    if global_batch % jax.process_count() or eval_batch % jax.process_count():
      raise ValueError('batch sizes must be divisible by the number of processes.')
    self.vocab = vocab_lib.build(config.get('vocab') or {})
    self.vocab_size = self.vocab.size
    self.chunk = int(config.get('chunk_length', 128))
    self.noise_density = float(config.get('noise_density', 0.15))
    self.mean_span = float(config.get('mean_noise_span_length', 3.0))
    if self.chunk < 8:
      raise ValueError(f'dataset.chunk_length must be >= 8, got {self.chunk}.')
    data_dir = config.get('data_dir', '')
    self.train_tokens = shakespeare.token_stream(shakespeare.load_split('train', data_dir), self.vocab)
    self.eval_tokens = shakespeare.token_stream(shakespeare.load_split('validation', data_dir), self.vocab)
    inputs_length, targets_length = span_corruption_lengths(self.chunk, self.noise_density, self.mean_span)
    self.input_shapes = {'inputs': (inputs_length,), 'targets': (targets_length,)}
    self.seed = seed
    self.local_batch = global_batch // jax.process_count()
    self.global_batch, self.eval_batch = global_batch, eval_batch
    self.steps_per_epoch = max(len(self.train_tokens) // (self.chunk * global_batch), 1)
    self.num_eval = int(config.get('eval_examples', 512))

  def _examples(self, tokens: np.ndarray, starts, rng) -> Dict[str, np.ndarray]:
    pairs = [span_corruption.corrupt(tokens[s:s + self.chunk], self.vocab, rng, self.noise_density,
                                     self.mean_span) for s in starts]
    return {'inputs': pad_to([p[0] for p in pairs], self.input_shapes['inputs'][0]),
            'targets': pad_to([p[1] for p in pairs], self.input_shapes['targets'][0])}

  def train_batch(self, step: int) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng([self.seed, step, jax.process_index()])
    starts = rng.integers(0, len(self.train_tokens) - self.chunk, self.local_batch)
    return self._examples(self.train_tokens, starts, rng)

  def eval_batches(self) -> Iterator[Dict[str, np.ndarray]]:
    """A fixed set of held-out chunks (evenly spaced over the held-out plays), the same at every evaluation."""
    starts = np.linspace(0, len(self.eval_tokens) - self.chunk, self.num_eval).astype(np.int64)
    local = self.eval_batch // jax.process_count()
    for b in range(math.ceil(self.num_eval / self.eval_batch)):
      chunk_starts = starts[b * self.eval_batch:(b + 1) * self.eval_batch]
      mask = np.zeros(self.eval_batch, np.float32)
      mask[:len(chunk_starts)] = 1.0
      chunk_starts = np.pad(chunk_starts, (0, self.eval_batch - len(chunk_starts)))
      lo = jax.process_index() * local
      batch = self._examples(self.eval_tokens, chunk_starts[lo:lo + local], np.random.default_rng([7, b, lo]))
      batch['mask'] = mask[lo:lo + local]
      yield batch


def build(config, global_batch: int, eval_batch: int, seed: int):
  name = config.get('name')
  if name == 'shakespeare':
    return ShakespeareSpanCorruption(config, global_batch, eval_batch, seed)
  from pgf_sparsity.data import tfds_text  # pylint: disable=g-import-not-at-top
  return tfds_text.TfdsText(config, global_batch, eval_batch, seed)
