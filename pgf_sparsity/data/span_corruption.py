"""T5's span-corruption objective (Raffel et al. 2020), on numpy token arrays.

round(L * noise_density) tokens, in round(noise / mean_noise_span_length) spans (at least one), are
replaced in the input by one sentinel per span; the target lists each sentinel followed by the tokens it
hides, then EOS. Non-noise and noise spans alternate, starting with non-noise; span lengths are a random
partition, as in T5's `random_spans_noise_mask`.
"""
from typing import Tuple

import numpy as np

from pgf_sparsity.data.vocab import EOS


def _random_partition(rng: np.random.Generator, total: int, parts: int) -> np.ndarray:
  """`parts` positive integers summing to `total`, uniformly among such compositions."""
  cuts = np.sort(rng.choice(np.arange(1, total), size=parts - 1, replace=False)) if parts > 1 else np.array([], int)
  return np.diff(np.concatenate([[0], cuts, [total]]))


def noise_mask(length: int, rng: np.random.Generator, noise_density: float = 0.15,
               mean_noise_span_length: float = 3.0) -> np.ndarray:
  num_noise = int(round(length * noise_density))
  num_noise = min(max(num_noise, 1), length - 1)
  num_spans = max(int(round(num_noise / mean_noise_span_length)), 1)
  num_nonnoise = length - num_noise
  num_spans = min(num_spans, num_noise, num_nonnoise)
  noise_lengths = _random_partition(rng, num_noise, num_spans)
  nonnoise_lengths = _random_partition(rng, num_nonnoise, num_spans)
  mask = np.zeros(length, bool)
  position = 0
  for keep, noise in zip(nonnoise_lengths, noise_lengths):
    position += keep
    mask[position:position + noise] = True
    position += noise
  return mask


def corrupt(tokens: np.ndarray, vocab, rng: np.random.Generator, noise_density: float = 0.15,
            mean_noise_span_length: float = 3.0) -> Tuple[np.ndarray, np.ndarray]:
  """(inputs, targets) of one example; both end with EOS."""
  tokens = np.asarray(tokens)
  mask = noise_mask(len(tokens), rng, noise_density, mean_noise_span_length)
  starts = mask & ~np.concatenate([[False], mask[:-1]])
  span_index = np.cumsum(starts) - 1
  inputs, targets = [], []
  for i, token in enumerate(tokens):
    if not mask[i]:
      inputs.append(token)
    else:
      if starts[i]:
        sentinel = vocab.sentinel(int(span_index[i]))
        inputs.append(sentinel)
        targets.append(sentinel)
      targets.append(token)
  return np.array(inputs + [EOS], np.int32), np.array(targets + [EOS], np.int32)


def uncorrupt(inputs: np.ndarray, targets: np.ndarray, vocab) -> np.ndarray:
  """The original tokens from (inputs, targets): fill each sentinel with the span the target gives it."""
  spans, current = {}, None
  for t in targets:
    if t == EOS:
      break
    if vocab.size - vocab.num_sentinels <= t:
      current = int(t)
      spans[current] = []
    else:
      spans[current].append(int(t))
  out = []
  for t in inputs:
    if t == EOS:
      break
    out.extend(spans[int(t)] if int(t) in spans else [int(t)])
  return np.array(out, np.int32)


def span_corruption_lengths(chunk: int, noise_density: float, mean_span: float):
  """Exact (inputs, targets) lengths, EOS included, of a corrupted chunk (span counts are deterministic)."""
  mask = noise_mask(chunk, np.random.default_rng(0), noise_density, mean_span)
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
