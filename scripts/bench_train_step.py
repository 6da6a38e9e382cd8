"""Train-step time of sparse recipes over dense, measured side by side in one run (interleaved rounds).

  .venv/bin/python scripts/bench_train_step.py                  # the CPU benchmark model
  .venv/bin/python scripts/bench_train_step.py --model=vit_b16  # ViT-B/16 bf16 at 224 px (for a GPU)
  .venv/bin/python scripts/bench_train_step.py --model=fashion_mnist --cases=dense,mdgf_exponential:1:8,torch
                                                  # the README main job's model and recipe, and PyTorch's step
  .venv/bin/python scripts/bench_train_step.py --cases=dense,torch   # against the same model in PyTorch
  .venv/bin/python scripts/bench_train_step.py --from_json=results/train_step/bench.json \
      --markdown=results/train_step/table.md --summary=results/train_step/summary.md  # the tables, from the data

The committed measurement (`results/train_step/bench.json`, written with --json) is every recipe at 2:4, 1:8,
1:32 and 1:128 against dense; docs/benchmarks.md and the README show the tables generated from it.

Masks are recomputed at every step (mask_update_every = 1), FF layers sparse. Prints a markdown table with
ms per step (median over rounds), the ratio to dense, the paired ratio (geometric mean over rounds of each
round's ratio, with a 95% interval: the figure that can resolve a few percent on a noisy machine, e.g.
--steps=1 --rounds=60), the same from the fastest round (on a shared machine, where other tenants only ever
add time), the paired ratio of CPU time, and images/s; with --flops also the model FLOPs utilisation against
--peak_tflops (dense-model FLOPs from pgf_sparsity.analysis.flops).

CPU time (of the whole process, all threads) leaves out the time the process is not running: other
processes and, in a VM, time stolen by the host. On a shared machine its per-round noise is several times
smaller than wall time's, so it resolves a sparse recipe's extra work where wall time cannot; it measures
work, not latency (a change in how well the step uses the cores shows in wall time only), and is not shown
for torch, whose OpenMP threads spin while they wait.
"""
import argparse
import json
import os
import sys
import textwrap
import time

import jax
import ml_collections
import numpy as np
import scipy.special

from pgf_sparsity import config_lib
from pgf_sparsity.analysis import flops
from pgf_sparsity.models import common
from pgf_sparsity.training import experiment
from pgf_sparsity.training import host_memory
from pgf_sparsity.training import steps

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # torch_vit, the PyTorch twin; machine
import machine  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

MODELS = {
    # The CPU benchmark model: ViT width 384, depth 4, 6 heads, MLP 1536, 64x64 images, patch 8, batch 32.
    'bench': dict(model=dict(name='vit', variant=None, width=384, depth=4, mlp_dim=1536, num_heads=6,
                             patch_size=8, pool='gap', dtype='float32'), image_size=64, batch=32),
    # The main job's model (configs/fashion_mnist.py, size base) at its batch, on synthetic 28x28 RGB images
    # with the benchmark's 1000 classes (the head is 1% of the FLOPs).
    'fashion_mnist': dict(model=dict(name='vit', variant=None, width=96, depth=3, mlp_dim=384, num_heads=3,
                                     patch_size=7, pool='gap', dtype='float32'), image_size=28, batch=128),
    'vit_b16': dict(model=dict(name='vit', variant='B/16', pool='token', dtype='bfloat16'),
                    image_size=224, batch=256),
}


def make_config(model: str, recipe: str, pattern: str, batch: int) -> ml_collections.ConfigDict:
  spec = MODELS[model]
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.dataset = dict(name='synthetic', image_size=spec['image_size'], num_classes=1000)
  config.model = dict(spec['model'], num_classes=1000)
  config.sparsity = config_lib.sparsity_config(
      recipe, {'ff': (common.SPARSE_TARGETS['ff'], pattern if recipe != 'dense' else None)}, alpha=1e-4,
      flow='ste' if recipe == 'srste' else 'decayed')  # SR-STE is defined on the straight-through flow
  config.batch_size = batch or spec['batch']
  config.total_steps = 1_000_000
  config.num_epochs = None
  config.optimizer = dict(learning_rate=1e-3, warmup_steps=100, weight_decay=0.01, grad_clip_norm=1.0)
  config_lib.set_intervals(config, log_every=100, eval_every=100, checkpoint_every=100)
  config.keep_checkpoints = 1
  config.loss = 'sigmoid'
  return config


def model_flops_per_step(config) -> float:
  """Dense training FLOPs per step (pgf_sparsity.analysis.flops: 3x the forward matmuls; XLA's cost analysis misses
  cuBLAS calls on GPU)."""
  exp, _ = experiment.from_config(config)
  counter = flops.TrainingFlops(exp.model, exp.dummy_inputs, exp.recipe, config.batch_size)
  return counter.dense_cumulative(1)


def jax_runner(args, case):
  """A function that runs k train steps of `case` ('dense' or 'recipe:n:m') and waits for them."""
  recipe, _, pattern = case.partition(':')
  config = make_config(args.model, recipe, pattern, args.batch)
  exp, data = experiment.from_config(config)
  step_fn = steps.CompiledSteps(exp).train_step(exp.recipe.plan(0))
  batch = exp.shard(data.train_batch(0))
  state = [exp.initial_state()]

  def run(k):
    for _ in range(k):
      state[0], metrics = step_fn(state[0], batch)
    jax.block_until_ready((state[0].params, metrics))

  run(3)  # compile and warm up
  return run


def torch_runner(args, case):
  """The same model and step in PyTorch (scripts/torch_vit.py; needs torch)."""
  del case
  import torch  # pylint: disable=g-import-not-at-top
  import torch_vit  # pylint: disable=g-import-not-at-top
  spec = MODELS[args.model]
  model_args = spec['model']
  if model_args.get('dtype') != 'float32' or model_args.get('pool') != 'gap':
    raise ValueError('the PyTorch twin exists for the fp32 models only (--model=bench or fashion_mnist).')
  model = torch_vit.ViT(spec['image_size'], model_args['patch_size'], model_args['width'], model_args['depth'],
                        model_args['num_heads'], model_args['mlp_dim'], 1000)
  step = torch_vit.make_step(model, 1000)
  batch = args.batch or spec['batch']
  images = torch.rand(batch, 3, spec['image_size'], spec['image_size']) * 2 - 1
  labels = torch.randint(0, 1000, (batch,))

  def run(k):
    for _ in range(k):
      step(images, labels)

  run(3)
  return run


def measure(runs, rounds: int, steps_per_round: int, seed: int = 0) -> None:
  """Interleaved rounds (every case sees the same machine state), the cases in a new random order each
  round, so that no case always follows the same one (a case can leave the next one cold caches or spinning
  threads); appends each round's wall and CPU seconds per step to runs[case]['times'] and ['cpu_times']."""
  cases = list(runs)
  order = np.random.default_rng(seed)
  for _ in range(rounds):
    for case in order.permutation(cases):
      start, cpu_start = time.perf_counter(), time.process_time()
      runs[case]['run'](steps_per_round)
      runs[case]['times'].append((time.perf_counter() - start) / steps_per_round)
      runs[case]['cpu_times'].append((time.process_time() - cpu_start) / steps_per_round)


def paired_ratio(times, reference_times):
  """Geometric mean over rounds of the step time over the reference's in the same round, with its 95% t
  interval: pairing by round cancels the machine's drifts, which the medians of the two cases do not."""
  logs = np.log(np.asarray(times) / np.asarray(reference_times))
  if len(logs) < 2:
    return float(np.exp(logs.mean())), float('nan'), float('nan')
  # the t distribution's 97.5% quantile (scipy.stats.t.ppf, whose import is slower)
  half = scipy.special.stdtrit(len(logs) - 1, 0.975) * logs.std(ddof=1) / np.sqrt(len(logs))
  return tuple(float(np.exp(v)) for v in (logs.mean(), logs.mean() - half, logs.mean() + half))


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--model', default='bench', choices=sorted(MODELS))
  parser.add_argument('--cases', default='dense,static:2:4,static:1:8,static:1:32,static:1:128,'
                                         'mdgf_exponential:1:32')
  parser.add_argument('--batch', type=int, default=0)
  parser.add_argument('--steps', type=int, default=5, help='steps per round')
  parser.add_argument('--rounds', type=int, default=5)
  parser.add_argument('--flops', action='store_true')
  parser.add_argument('--peak_tflops', type=float, default=989.0, help='H100/H200 dense bf16 peak')
  parser.add_argument('--json', default='', help='write the measurements to this file')
  parser.add_argument('--from_json', default='', help='measure nothing: the tables of the measurements in this file')
  parser.add_argument('--markdown', default='', help='write the full table to this file')
  parser.add_argument('--summary', default='', help="write the README's sentence to this file")
  parser.add_argument('--host_memory', default='auto', choices=('auto', 'keep', 'default'),
                      help='keep: freed host memory stays mapped (pgf_sparsity/host_memory.py); default: glibc as '
                           'is; auto: keep on the CPU, as pgf_sparsity.main does')
  args = parser.parse_args()
  if args.from_json:
    with open(args.from_json) as f:
      result = json.load(f)
  else:
    if args.host_memory == 'keep':  # before JAX starts its backend; applies to the PyTorch twin as well
      host_memory.keep_freed_memory()
    elif args.host_memory == 'auto':
      host_memory.keep_freed_memory_on_cpu()
    result = measure_all(args)
    if args.json:
      with open(args.json, 'w') as f:
        json.dump(result, f, indent=1)
  sys.stdout.write(markdown(result))
  for path, render in ((args.markdown, markdown), (args.summary, summary)):
    if path:
      with open(path, 'w') as f:
        f.write(render(result))


def measure_all(args) -> dict:
  """Measures every case; the result's rows, one per case, against the first case."""
  runs = {case: dict(run=(torch_runner if case == 'torch' else jax_runner)(args, case), times=[], cpu_times=[])
          for case in args.cases.split(',')}
  measure(runs, args.rounds, args.steps)
  first = next(iter(runs))
  config = make_config(args.model, 'dense', '', args.batch)
  flops = model_flops_per_step(config) if args.flops else None
  rows = []
  for case, entry in runs.items():
    ms = 1e3 * float(np.median(entry['times']))
    row = dict(case=case, ms=ms, fastest_ms=1e3 * min(entry['times']), images_per_s=config.batch_size / ms * 1e3)
    row['paired'] = paired_ratio(entry['times'], runs[first]['times'])
    if 'torch' not in (case, first):
      row['cpu_paired'] = paired_ratio(entry['cpu_times'], runs[first]['cpu_times'])
    if flops:
      row['mfu'] = flops / (ms * 1e-3) / (args.peak_tflops * 1e12)
    rows.append(row)
  return dict(model=args.model, batch=config.batch_size, device=f'{jax.devices()[0].device_kind} x{jax.device_count()}',
              rounds=args.rounds, steps=args.steps, machine=machine.describe(), rows=rows)


def _ratio(value) -> str:
  return '{:.3f} ({:.3f}-{:.3f})'.format(*value) if value else '-'


def markdown(result: dict) -> str:
  """The full table: every case's step time and its ratios to the first case."""
  rows, first = result['rows'], result['rows'][0]
  mfu = 'mfu' in first
  lines = [f"{result['model']}: batch {result['batch']}, {result['device']}, {result['rounds']} rounds x "
           f"{result['steps']} steps, masks refreshed every step; {result['machine']}.", '',
           f"| case | ms/step | ratio to {first['case']} | paired ratio (95% CI) | fastest round: ms/step | ratio "
           '| CPU time: paired ratio (95% CI) | images/s |' + (' MFU |' if mfu else '')]
  lines.append('|---' * (lines[-1].count('|') - 1) + '|')
  for row in rows:
    line = (f"| {row['case']} | {row['ms']:.2f} | {row['ms'] / first['ms']:.3f} | {_ratio(row['paired'])} | "
            f"{row['fastest_ms']:.2f} | {row['fastest_ms'] / first['fastest_ms']:.3f} | "
            f"{_ratio(row.get('cpu_paired'))} | {row['images_per_s']:.0f} |")
    lines.append(line + (f" {row['mfu']:.3f} |" if mfu else ''))
  return '\n'.join(lines) + '\n'


def summary(result: dict) -> str:
  """A paragraph for the README: the range of the sparse cases' CPU-time ratios to the first case."""
  first = result['rows'][0]['case']
  rows = sorted((row for row in result['rows'][1:] if row.get('cpu_paired')), key=lambda row: row['cpu_paired'][0])
  recipes = sorted({row['case'].split(':')[0] for row in rows})
  patterns = sorted({row['case'].split(':', 1)[1] for row in rows}, key=lambda p: int(p.split(':')[1]))
  text = (f"A sparse train step costs {rows[0]['cpu_paired'][0]:.3f}x to {rows[-1]['cpu_paired'][0]:.3f}x a {first} "
          f"one by CPU time ({len(recipes)} recipes at {', '.join(patterns)}, paired over {result['rounds']} rounds; "
          f"most: {rows[-1]['case']}; [benchmarks](docs/benchmarks.md); {result['machine']}).")
  return textwrap.fill(text, width=116) + '\n'


if __name__ == '__main__':
  main()
