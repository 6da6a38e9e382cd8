r"""Figures (PNG) from a sweep: accuracy vs sparsity, accuracy vs training FLOPs, beta(t) and SDGF frames,
and the gradient-noise curves of the paper's section 4.

  .venv/bin/python scripts/plot.py --csv=results/fashion_mnist.csv --out=results/figures
  .venv/bin/python scripts/plot.py --schedules --steps=3000 --alpha=2e-3 --pattern=1:8 --out=results/figures

Gradient-noise curves need runs with config.diagnostics_every_steps > 0: they show the moving average (40
log points) of the change of the gradient between log points (grad_change_std, mean over sparse layers)
for each run in the CSV whose pattern is given by --noise_patterns.
"""
import argparse
import collections
import csv
import os

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pgf_sparsity import diagnostics  # noqa: E402
from pgf_sparsity import metrics  # noqa: E402
from pgf_sparsity.sparsity import schedules  # noqa: E402
from pgf_sparsity.sparsity import Recipe  # noqa: E402


def load(path):
  with open(path) as f:
    rows = [r for r in csv.DictReader(f) if r.get('accuracy')]
  for r in rows:
    r['accuracy'] = float(r['accuracy'])
    r['train_flops'] = float(r['train_flops'])
    r['label'] = r['recipe'] if r['recipe'] in ('dense', 'srste') else f'{r["recipe"]} ({r["flow"]})'
  return rows


def density(pattern: str) -> float:
  if pattern == 'dense':
    return 1.0
  n, m = pattern.split()[0].split('=')[-1].split(':')
  return int(n) / int(m)


def accuracy_vs_sparsity(rows, out):
  fig, ax = plt.subplots(figsize=(6, 4))
  groups = collections.defaultdict(lambda: collections.defaultdict(list))
  for r in rows:
    groups[r['label']][1.0 - density(r['pattern'])].append(100 * r['accuracy'])
  dense = groups.pop('dense', {})
  for label, points in sorted(groups.items()):
    xs = sorted(points)
    ax.errorbar(xs, [np.mean(points[x]) for x in xs], yerr=[np.std(points[x]) for x in xs], marker='o',
                capsize=3, label=label)
  if dense:
    ax.axhline(np.mean(dense[0.0]), color='k', ls='--', label='dense')
  ax.set_xlabel('sparsity (1 - N/M)')
  ax.set_ylabel('eval accuracy (%)')
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(os.path.join(out, 'accuracy_vs_sparsity.png'), dpi=120)
  plt.close(fig)


def accuracy_vs_flops(rows, out):
  fig, ax = plt.subplots(figsize=(6, 4))
  for label in sorted({r['label'] for r in rows}):
    sel = [r for r in rows if r['label'] == label]
    ax.scatter([r['train_flops'] for r in sel], [100 * r['accuracy'] for r in sel], label=label, s=14)
  ax.set_xscale('log')
  ax.set_xlabel('training FLOPs')
  ax.set_ylabel('eval accuracy (%)')
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(os.path.join(out, 'accuracy_vs_flops.png'), dpi=120)
  plt.close(fig)


def gradient_noise(rows, out, patterns, root):
  fig, axes = plt.subplots(1, len(patterns), figsize=(5 * len(patterns), 3.6), squeeze=False)
  for ax, pattern in zip(axes[0], patterns):
    shown = set()
    for r in rows:
      if r['pattern'] not in (pattern, 'dense') or r.get('seed', '0') not in ('0', 0) or r['label'] in shown:
        continue  # seed 0 only; dense runs repeat across the grid's patterns
      shown.add(r['label'])
      records = [x for x in metrics.read_jsonl(os.path.join(root, r['run'])) if x['split'] == 'diag']
      steps, values = [], []
      for x in records:
        changes = [v for k, v in x.items() if k.endswith('/grad_change_std')]
        if changes:
          steps.append(x['step'])
          values.append(np.mean(changes))
      if values:
        ax.plot(steps, diagnostics.moving_average(values, 40), label=r['label'])
    ax.set_title(f'gradient change std, {pattern}')
    ax.set_xlabel('step')
    ax.set_yscale('log')
    ax.legend(fontsize=6)
  fig.tight_layout()
  fig.savefig(os.path.join(out, 'gradient_noise.png'), dpi=120)
  plt.close(fig)


def schedule_figure(steps, alpha, pattern, out):
  n, m = (int(v) for v in pattern.split(':'))
  targets = {'ff': {'regex': '.*', 'n': n, 'm': m}}
  t = np.arange(steps)
  fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
  for kind in ('linear', 'exponential'):
    a.plot(t, [float(schedules.beta(kind, x, alpha)) for x in t], label=f'MDGF-{kind}')
  a.set_xlabel('step')
  a.set_ylabel('beta (mask value of pruned weights)')
  a.legend()
  group = b.twinx()  # geometric keeps N/M and shrinks the group size M
  for kind, axis, index, style in (('stepwise', b, 0, '-'), ('geometric', group, 1, '--')):
    sp = Recipe.from_config({'recipe': f'sdgf_{kind}', 'targets': targets}).schedule(steps)
    values = [sp.plan(int(x)).pattern('ff') for x in t]
    values = [p[0] / p[1] for p in values] if index == 0 else [p[1] for p in values]
    label = ' -> '.join(f'{pn}:{pm}' for pn, pm in sp.frame_patterns()['ff'])
    axis.step(t, values, style, where='post', color=f'C{index}', label=f'SDGF-{kind}: {label}')
  b.set_xlabel('step')
  b.set_ylabel('stepwise: density N/M')
  group.set_ylabel('geometric: group size M')
  b.set_yscale('log', base=2)
  group.set_yscale('log', base=2)
  b.legend(fontsize=7, loc='upper right')
  group.legend(fontsize=7, loc='center right')
  fig.tight_layout()
  fig.savefig(os.path.join(out, 'schedules.png'), dpi=120)
  plt.close(fig)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--csv')
  parser.add_argument('--root', help='the sweep root holding the runs (default: --csv\'s runs as named)')
  parser.add_argument('--out', required=True)
  parser.add_argument('--noise_patterns', default='ff=2:4,ff=1:32')
  parser.add_argument('--schedules', action='store_true')
  parser.add_argument('--steps', type=int, default=3000)
  parser.add_argument('--alpha', type=float, default=2e-3)
  parser.add_argument('--pattern', default='1:8')
  args = parser.parse_args()
  os.makedirs(args.out, exist_ok=True)
  if args.schedules:
    schedule_figure(args.steps, args.alpha, args.pattern, args.out)
  if args.csv:
    rows = load(args.csv)
    accuracy_vs_sparsity(rows, args.out)
    accuracy_vs_flops(rows, args.out)
    if args.root:
      gradient_noise(rows, args.out, args.noise_patterns.split(','), args.root)


if __name__ == '__main__':
  main()
