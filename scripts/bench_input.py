"""Device-idle time per step waiting for input, with and without the background prefetch (prefetch.py), on the
CPU benchmark model fed by the tfds ImageNet pipeline (decode, random-resized crop, flip, RandAugment) over
tfds mock data, measured side by side in one run.

  .venv/bin/python scripts/bench_input.py [--steps 30] [--randaugment 2]

Without prefetch the step waits for the whole host pipeline; with it, only for what the previous step did
not hide. On a 2-core CPU host and device share the cores, so the overlap is smaller than on an accelerator.
"""
import argparse
import os
import sys
import time

import jax
import numpy as np
import tensorflow_datasets as tfds

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_train_step  # noqa: E402  pylint: disable=wrong-import-position
from pgf_sparsity.training import experiment, prefetch, steps  # noqa: E402  pylint: disable=wrong-import-position


def _config(args):
  config = bench_train_step.make_config('bench', 'static', '1:8', 0)
  config.dataset = dict(name='tfds', tfds_name='imagenet2012', image_size=64, num_train_examples=256,
                        num_eval_examples=32, randaugment=dict(num_layers=args.randaugment, magnitude=9))
  config.model.num_classes = 1000
  return config


def _run(exp, data, step_fn, state, first: int, count: int, with_prefetch: bool):
  """(seconds waiting for input per step, seconds per step)."""
  make = lambda s: exp.shard(data.train_batch(s))
  waited, begin = 0.0, time.perf_counter()
  if with_prefetch:
    with prefetch.Prefetcher(make, first, first + count) as batches:
      for step in range(first, first + count):
        state, metrics = step_fn(state, batches.get(step))
        jax.block_until_ready(metrics)
      waited = batches.waited
  else:
    for step in range(first, first + count):
      t0 = time.perf_counter()
      batch = make(step)
      waited += time.perf_counter() - t0
      state, metrics = step_fn(state, batch)
      jax.block_until_ready(metrics)
  return state, waited / count, (time.perf_counter() - begin) / count


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--steps', type=int, default=30)
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--randaugment', type=int, default=2, help='RandAugment layers (0: none)')
  args = parser.parse_args()
  with tfds.testing.mock_data(num_examples=256, policy=tfds.testing.MockPolicy.USE_CODE):
    exp, data = experiment.from_config(_config(args))
    step_fn = steps.CompiledSteps(exp).train_step(exp.recipe.plan(0))
    state = exp.initial_state()
    state, _, _ = _run(exp, data, step_fn, state, 0, 3, False)  # compile, trace the input graph
    results = {False: [], True: []}
    first = 3
    for _ in range(args.rounds):  # interleaved rounds
      for with_prefetch in (False, True):
        state, waited, per_step = _run(exp, data, step_fn, state, first, args.steps, with_prefetch)
        results[with_prefetch].append((waited, per_step))
        first += args.steps
  print('| input | device idle ms/step (waiting for input) | ms/step |')
  print('|---|---|---|')
  for with_prefetch, label in ((False, 'in the loop'), (True, 'prefetched (2 steps ahead)')):
    waited, per_step = np.median(np.array(results[with_prefetch]), axis=0)
    print(f'| {label} | {1e3 * waited:.1f} | {1e3 * per_step:.1f} |')


if __name__ == '__main__':
  main()
