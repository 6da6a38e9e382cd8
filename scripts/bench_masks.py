"""Times every exact N:M mask method on one kernel and prints a markdown table (ms per mask, median).

  .venv/bin/python scripts/bench_masks.py                      # 3072x768 kernel, grouped along axis 0
  .venv/bin/python scripts/bench_masks.py --rows=768 --cols=3072
  .venv/bin/python scripts/bench_masks.py --flips              # counting changed mask entries, two ways

The 'auto' column is what `nm_mask` uses; `nm.choose_method` is set from this table ('kernel', the C++ mask,
runs on a CPU of one device for lists of up to 16 keys: '-' where it does not).
"""
import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from pgf_sparsity.sparsity import nm

PATTERNS = [(2, 4), (1, 8), (1, 32), (1, 128),                        # targets
            (3, 4), (7, 8), (4, 8), (2, 8), (15, 16), (8, 16), (4, 16), (2, 16), (1, 16),  # SDGF frames
            (31, 32), (16, 32), (8, 32), (4, 32), (2, 32), (8, 64), (4, 128), (127, 128),
            (64, 128), (32, 128), (16, 128), (8, 128), (2, 128), (8, 256), (8, 1024)]
# Methods whose cost grows with the number of rounds are skipped where they are hopeless.
MAX_ROUNDS = {'argmax': 16, 'extremes': 32}
MAX_GROUP = {'rank': 128}  # M passes over the kernel


def median_ms(fn, x, reps):
  fn(x).block_until_ready()
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    fn(x).block_until_ready()
    times.append(time.perf_counter() - start)
  return 1e3 * float(np.median(times))


def bench_flips(rows, cols, reps):
  """ms to count the entries in which two masks differ: `nm.count_changed` against the plain sum."""
  keys = jax.random.split(jax.random.PRNGKey(0), 2)
  a, b = (jax.random.bernoulli(k, 0.5, (rows, cols)) for k in keys)
  ways = {'sum(a != b)': jax.jit(lambda a, b: jnp.sum(a != b)), 'nm.count_changed': jax.jit(nm.count_changed)}
  print(f'Changed entries of two {rows}x{cols} boolean masks, {jax.devices()[0].platform}, ms (median of {reps})\n')
  print('| way | ms |\n|---|---|')
  for name, fn in ways.items():
    print(f'| {name} | {median_ms(lambda x: fn(*x), (a, b), reps):.3f} |', flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--rows', type=int, default=3072)
  parser.add_argument('--cols', type=int, default=768)
  parser.add_argument('--reps', type=int, default=20)
  parser.add_argument('--flips', action='store_true', help='time counting changed mask entries instead')
  args = parser.parse_args()
  if args.flips:
    return bench_flips(args.rows, args.cols, args.reps)
  w = jax.random.normal(jax.random.PRNGKey(0), (args.rows, args.cols))
  methods = sorted(nm.METHODS)
  print(f'N:M mask, {args.rows}x{args.cols} float32 kernel grouped along axis 0, {jax.devices()[0].platform}, '
        f'ms (median of {args.reps})\n')
  print('| N:M | ' + ' | '.join(methods) + ' | auto |')
  print('|---' * (len(methods) + 2) + '|')
  for n, m in PATTERNS:
    if args.rows % m:
      continue
    cells = []
    for method in methods:
      if (min(n, m - n) > MAX_ROUNDS.get(method, m) or m > MAX_GROUP.get(method, m)
          or method == 'network' and not nm.network_compiles_quickly(n, m)
          or method == 'kernel' and nm.kernel_unavailable_reason(n, m)):
        cells.append('-')
        continue
      fn = jax.jit(lambda x, method=method: nm.nm_mask(x, n, m, method=method))
      cells.append(f'{median_ms(fn, w, args.reps):.2f}')
    auto = jax.jit(lambda x: nm.nm_mask(x, n, m))
    cells.append(f'{median_ms(auto, w, args.reps):.2f} ({nm.choose_method(n, m)})')
    print(f'| {n}:{m} | ' + ' | '.join(cells) + ' |', flush=True)


if __name__ == '__main__':
  main()
