"""T5's span-corruption objective (Raffel et al. 2020), vectorised over numpy token arrays.

round(L * noise_density) tokens, in round(noise / mean_noise_span_length) spans (at least one), are
replaced in the input by one sentinel per span; the target lists each sentinel followed by the tokens it
hides, then EOS. Non-noise and noise spans alternate, starting with non-noise; span lengths are a random
partition, as in T5's `random_spans_noise_mask`.

For pretraining on a corpus (C4), `concat_then_split` joins documents and cuts them into pieces of
`raw_length(inputs_length)` tokens, T5's `reduce_concat_tokens` + `split_tokens` with the length of
`random_spans_helper`: 568 raw tokens give exactly 512 inputs and 114 targets.
"""
from typing import List, Sequence, Tuple

import numpy as np

from pgf_sparsity.data.vocab import EOS


def _random_partitions(rng: np.random.Generator, total: int, parts: int, rows: int) -> np.ndarray:
  """(rows, parts) positive integers, each row summing to `total` and uniform among such compositions (the
  cut points are a uniformly random subset of 1..total-1)."""
  if parts == 1:
    return np.full((rows, 1), total)
  cuts = np.sort(np.argsort(rng.random((rows, total - 1)), axis=1)[:, :parts - 1] + 1, axis=1)
  return np.diff(np.concatenate([np.zeros((rows, 1), int), cuts, np.full((rows, 1), total)], axis=1), axis=1)


def _counts(length: int, noise_density: float, mean_noise_span_length: float) -> Tuple[int, int]:
  """(noise tokens, noise spans) of a piece of `length` tokens: T5's rounding, kept within the piece."""
  num_noise = min(max(int(round(length * noise_density)), 1), length - 1)
  num_spans = max(int(round(num_noise / mean_noise_span_length)), 1)
  return num_noise, min(num_spans, num_noise, length - num_noise)


def noise_masks(rows: int, length: int, rng: np.random.Generator, noise_density: float = 0.15,
                mean_noise_span_length: float = 3.0) -> np.ndarray:
  """(rows, length) bools, independent masks: non-noise and noise spans alternating, non-noise first."""
  num_noise, num_spans = _counts(length, noise_density, mean_noise_span_length)
  noise = _random_partitions(rng, num_noise, num_spans, rows)
  nonnoise = _random_partitions(rng, length - num_noise, num_spans, rows)
  boundaries = np.cumsum(np.stack([nonnoise, noise], axis=2).reshape(rows, -1), axis=1)[:, :-1]
  flips = np.zeros((rows, length), np.int32)
  flips[np.arange(rows)[:, None], boundaries] = 1
  return (np.cumsum(flips, axis=1) % 2).astype(bool)


def noise_mask(length: int, rng: np.random.Generator, noise_density: float = 0.15,
               mean_noise_span_length: float = 3.0) -> np.ndarray:
  return noise_masks(1, length, rng, noise_density, mean_noise_span_length)[0]


def corrupt_rows(tokens: np.ndarray, vocab, rng: np.random.Generator, noise_density: float = 0.15,
                 mean_noise_span_length: float = 3.0) -> Tuple[np.ndarray, np.ndarray]:
  """(inputs, targets) of each row of `tokens` (rows, length): every row has the same span counts, so the
  results are (rows, inputs length) and (rows, targets length) arrays, each row ending with EOS."""
  tokens = np.asarray(tokens, np.int32)
  rows, length = tokens.shape
  mask = noise_masks(rows, length, rng, noise_density, mean_noise_span_length)
  starts = mask & ~np.concatenate([np.zeros((rows, 1), bool), mask[:, :-1]], axis=1)
  table = np.array([vocab.sentinel(k) for k in range(_counts(length, noise_density, mean_noise_span_length)[1])],
                   np.int32)
  sentinels = table[np.maximum(np.cumsum(starts, axis=1) - 1, 0)]
  inputs = np.where(starts, sentinels, tokens)[~mask | starts].reshape(rows, -1)
  # targets: before each noise token, its span's sentinel where the span starts
  keep = np.stack([starts, mask], axis=2).reshape(rows, -1)
  targets = np.stack([sentinels, tokens], axis=2).reshape(rows, -1)[keep].reshape(rows, -1)
  eos = np.full((rows, 1), EOS, np.int32)
  return np.concatenate([inputs, eos], axis=1), np.concatenate([targets, eos], axis=1)


def corrupt(tokens: np.ndarray, vocab, rng: np.random.Generator, noise_density: float = 0.15,
            mean_noise_span_length: float = 3.0) -> Tuple[np.ndarray, np.ndarray]:
  """(inputs, targets) of one example; both end with EOS."""
  inputs, targets = corrupt_rows(np.asarray(tokens)[None], vocab, rng, noise_density, mean_noise_span_length)
  return inputs[0], targets[0]


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


def corrupted_lengths(length: int, noise_density: float = 0.15, mean_span: float = 3.0) -> Tuple[int, int]:
  """(inputs, targets) lengths, EOS included, of a corrupted piece of `length` tokens."""
  noise, spans = _counts(length, noise_density, mean_span)
  return length - noise + spans + 1, noise + spans + 1


def raw_length(inputs_length: int, noise_density: float = 0.15, mean_span: float = 3.0) -> int:
  """The most raw tokens whose corrupted inputs fit `inputs_length` (T5's `random_spans_helper`)."""
  length = inputs_length - 1
  while corrupted_lengths(length + 1, noise_density, mean_span)[0] <= inputs_length:
    length += 1
  return length


def concat_then_split(documents: Sequence[np.ndarray], length: int) -> List[np.ndarray]:
  """The documents' tokens joined in order and cut into pieces of `length` (the last may be shorter)."""
  joined = np.concatenate([np.asarray(d, np.int32) for d in documents]) if documents else np.zeros(0, np.int32)
  return [joined[i:i + length] for i in range(0, len(joined), length)]


def pad_to(rows, length: int) -> np.ndarray:
  out = np.zeros((len(rows), length), np.int32)
  for i, row in enumerate(rows):
    if len(row) > length:
      raise ValueError(f'a sequence of {len(row)} tokens does not fit the length {length}')
    out[i, :len(row)] = row
  return out
