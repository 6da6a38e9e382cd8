r"""Host throughput of span corruption: 568-token pieces of the Shakespeare corpus (byte vocabulary), corrupted
as T5's pretraining does (15%, mean span 3), pieces per second, median of 5 rounds of 2,048 pieces: one
piece per call (`corrupt`), and a batch of 256 pieces per call (`corrupt_rows`, what the pipelines use).

  .venv/bin/python scripts/bench_span_corruption.py
"""
import statistics
import time

import numpy as np

from pgf_sparsity.data import shakespeare, span_corruption
from pgf_sparsity.data import vocab as vocab_lib


def main():
  vocab = vocab_lib.ByteVocabulary()
  tokens = shakespeare.token_stream(shakespeare.load_split('train'), vocab)
  starts = np.random.default_rng(0).integers(0, len(tokens) - 568, 2048)
  pieces = np.stack([tokens[s:s + 568] for s in starts])
  per_piece = lambda rng: [span_corruption.corrupt(p, vocab, rng) for p in pieces]
  batched = lambda rng: [span_corruption.corrupt_rows(pieces[i:i + 256], vocab, rng) for i in range(0, 2048, 256)]
  for name, run in (('one piece per call', per_piece), ('256 pieces per call', batched)):
    rates = []
    for round_index in range(5):
      start = time.perf_counter()
      run(np.random.default_rng(round_index))
      rates.append(len(pieces) / (time.perf_counter() - start))
    print(f'span corruption of 568-token pieces, {name}: {statistics.median(rates):,.0f} pieces/s')


if __name__ == '__main__':
  main()
