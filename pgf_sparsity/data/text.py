"""Span corruption on the offline Shakespeare corpus: the offline default of the encoder-decoder (the tfds
text tasks are in tfds_text.py).

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
from pgf_sparsity.data.base import DataSpec


class ShakespeareSpanCorruption:

  def __init__(self, config: Mapping[str, Any], global_batch: int, eval_batch: int, seed: int):
    if global_batch % jax.process_count() or eval_batch % jax.process_count():
      raise ValueError('batch sizes must be divisible by the number of processes.')
    vocab = config.vocab
    if vocab.kind == 'sentencepiece' and not vocab.model_path:  # the corpus's own model
      vocab = dict(vocab, model_path=shakespeare.sentencepiece_model(int(vocab.size), config.data_dir))
    self.vocab = vocab_lib.build(vocab)
    self.chunk = int(config.chunk_length)
    self.noise_density = float(config.noise_density)
    self.mean_span = float(config.mean_noise_span_length)
    if self.chunk < 8:
      raise ValueError(f'dataset.chunk_length must be >= 8, got {self.chunk}.')
    data_dir = config.data_dir
    self.train_tokens = shakespeare.token_stream(shakespeare.load_split('train', data_dir), self.vocab)
    self.eval_tokens = shakespeare.token_stream(shakespeare.load_split('validation', data_dir), self.vocab)
    inputs_length, targets_length = span_corruption.corrupted_lengths(self.chunk, self.noise_density,
                                                                        self.mean_span)
    self.lengths = {'inputs': inputs_length, 'targets': targets_length}
    self.seed = seed
    self.local_batch = global_batch // jax.process_count()
    self.global_batch, self.eval_batch = global_batch, eval_batch
    self.spec = DataSpec('seq2seq', {k: (v,) for k, v in self.lengths.items()}, self.vocab.size,
                         max(len(self.train_tokens) // (self.chunk * global_batch), 1))
    self.num_eval = int(config.eval_examples)

  def _examples(self, tokens: np.ndarray, starts, rng) -> Dict[str, np.ndarray]:
    pieces = np.stack([tokens[s:s + self.chunk] for s in starts])
    inputs, targets = span_corruption.corrupt_rows(pieces, self.vocab, rng, self.noise_density, self.mean_span)
    return {'inputs': inputs, 'targets': targets}

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

