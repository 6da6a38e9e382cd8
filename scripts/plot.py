r"""Figures (PNG) from sweeps: accuracy vs sparsity, accuracy vs training FLOPs, beta(t) and SDGF frames,
the gradient-noise curves of the paper's section 4, final accuracy against run length, and (from sweep.py's
--traces) accuracy and mask-flip curves.

  .venv/bin/python scripts/plot.py --csv=results/fashion_mnist.csv --out=results/figures
  .venv/bin/python scripts/plot.py --csv=A.csv --csv=B.csv --traces=DIR --curves_pattern=ff=1:32 --out=DIR
  .venv/bin/python scripts/plot.py --csv=A.csv --csv=B.csv --length_pattern=ff=1:32 --out=DIR
  .venv/bin/python scripts/plot.py --schedules --steps=3000 --alpha=2e-3 --pattern=1:8 --out=results/figures

Every recipe keeps one colour in every figure; error bars are the tables' (std over seeds, ddof 1); the
fine-tune boundary (binary masks from there on) is a dotted vertical line. Gradient-noise curves need runs
with config.diagnostics_every_steps > 0: the moving average (5 log points) of the change of the gradient
between log points (L2, mean over sparse layers), after the flow and, from traces, before it (raw), on one
y-scale, for seed 0 of each run whose pattern is in --noise_patterns. They read the runs' workdirs (--root)
or their traces (--traces).
"""
import argparse
import collections
import csv
import gzip
import os

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pgf_sparsity.analysis import diagnostics  # noqa: E402
from pgf_sparsity.sparsity import Recipe  # noqa: E402
from pgf_sparsity.sparsity import schedules  # noqa: E402
from pgf_sparsity.training import metric_writers  # noqa: E402


LABELS = ('dense', 'static (decayed)', 'static (ste)', 'srste', 'mdgf_linear (decayed)', 'mdgf_linear (ste)',
          'mdgf_exponential (decayed)', 'mdgf_exponential (ste)', 'sdgf_stepwise (decayed)',
          'sdgf_geometric (decayed)')
_COLOURS = {label: plt.get_cmap('tab10')(i) for i, label in enumerate(LABELS)}


def save(fig, out: str, name: str) -> None:
  fig.tight_layout()
  fig.savefig(os.path.join(out, f'{name}.png'), dpi=120)
  plt.close(fig)


def rank(label: str) -> int:
  return LABELS.index(label) if label in LABELS else len(LABELS)


def colour(label: str):
  return _COLOURS.get(label, 'grey')


def load(paths):
  rows = []
  for path in paths:
    with open(path) as f:
      rows += [r for r in csv.DictReader(f) if r.get('accuracy')]
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


def main_steps(rows) -> int:
  return collections.Counter(int(r['steps']) for r in rows).most_common(1)[0][0]


def finetune_start(row) -> float:
  return int(row['steps']) * (1.0 - float(row.get('finetune_fraction') or 0.0))


def accuracy_vs_sparsity(rows, out):
  """Mean and std (ddof 1) over seeds per recipe, at the N:M patterns (evenly spaced, labelled)."""
  steps = main_steps(rows)
  rows = [r for r in rows if int(r['steps']) == steps]
  fig, ax = plt.subplots(figsize=(6, 4))
  groups = collections.defaultdict(lambda: collections.defaultdict(list))
  for r in rows:
    groups[r['label']][r['pattern']].append(100 * r['accuracy'])
  dense = [v for points in groups.pop('dense', {}).values() for v in points]
  patterns = sorted({p for points in groups.values() for p in points}, key=lambda p: 1.0 - density(p))
  spread = lambda values: np.std(values, ddof=1) if len(values) > 1 else 0.0
  for i, (label, points) in enumerate(sorted(groups.items(), key=lambda item: rank(item[0]))):
    xs = [patterns.index(p) + 0.06 * (i - len(groups) / 2) for p in patterns if p in points]
    ax.errorbar(xs, [np.mean(points[p]) for p in patterns if p in points],
                yerr=[spread(points[p]) for p in patterns if p in points], marker='o', capsize=3, label=label,
                color=colour(label))
  if dense:
    ax.axhspan(np.mean(dense) - spread(dense), np.mean(dense) + spread(dense), color='k', alpha=0.1)
    ax.axhline(np.mean(dense), color='k', ls='--', label='dense')
  ax.set_xticks(range(len(patterns)), [p.split('=')[-1] for p in patterns])
  ax.set_xlabel(f'N:M pattern ({steps} steps)')
  ax.set_ylabel('eval accuracy (%), exact N:M model')
  ax.legend(fontsize=7)
  save(fig, out, 'accuracy_vs_sparsity')


def accuracy_vs_flops(rows, out):
  fig, ax = plt.subplots(figsize=(6, 4))
  for label in sorted({r['label'] for r in rows}, key=rank):
    sel = [r for r in rows if r['label'] == label]
    ax.scatter([r['train_flops'] for r in sel], [100 * r['accuracy'] for r in sel], label=label, s=14,
               color=colour(label))
  ax.set_xscale('log')
  ax.set_xlabel('training FLOPs')
  ax.set_ylabel('eval accuracy (%)')
  ax.legend(fontsize=7)
  save(fig, out, 'accuracy_vs_flops')


def accuracy_vs_steps(rows, out, pattern):
  """Final accuracy against run length, mean and std (ddof 1) over seeds, per recipe at `pattern` and dense:
  where the dense curve flattens, the runs are near convergence."""
  fig, ax = plt.subplots(figsize=(6, 4))
  spread = lambda values: np.std(values, ddof=1) if len(values) > 1 else 0.0
  for label in sorted({r['label'] for r in rows}, key=rank):
    by_steps = collections.defaultdict(dict)  # steps -> seed -> accuracy (dense runs may repeat per pattern)
    for r in rows:
      if r['label'] == label and r['pattern'] in (pattern, 'dense'):
        by_steps[int(r['steps'])][r['seed']] = 100 * r['accuracy']
    if not by_steps:
      continue
    xs = sorted(by_steps)
    ax.errorbar(xs, [np.mean(list(by_steps[x].values())) for x in xs],
                yerr=[spread(list(by_steps[x].values())) for x in xs], marker='o', capsize=3, label=label,
                color=colour(label), ls='--' if label == 'dense' else '-')
  lengths = sorted({int(r['steps']) for r in rows})
  ax.set_xscale('log', base=2)
  ax.set_xticks(lengths, [f'{n:,}' for n in lengths])
  ax.minorticks_off()
  ax.set_xlabel('run length (steps)')
  ax.set_ylabel('final eval accuracy (%), exact N:M model')
  ax.set_title(f'{pattern.split("=")[-1]} and dense, mean ± std over seeds')
  ax.legend(fontsize=7)
  save(fig, out, 'accuracy_vs_steps')


def diag_records(row, root: str, traces: str):
  """{step: {series: value}} of a run's diagnostics and curves: from its trace CSV, else its workdir."""
  out = collections.defaultdict(dict)
  if traces:
    with gzip.open(os.path.join(traces, row['run'] + '.csv.gz'), 'rt', newline='') as f:
      for t in csv.DictReader(f):
        out[int(t['step'])][t['series']] = float(t['value'])
    return out
  for x in metric_writers.read_jsonl(os.path.join(root, row['run'])):
    if x['split'] == 'diag':
      out[x['step']].update({k: v for k, v in x.items() if k != 'split'})
  return out


def _layer_mean(records, kind: str):
  steps = [s for s in sorted(records) if any(k.endswith('/' + kind) for k in records[s])]
  return steps, [np.mean([v for k, v in records[s].items() if k.endswith('/' + kind)]) for s in steps]


def gradient_noise(rows, out, patterns, root='', traces=''):
  kinds = ('grad_change_l2', 'raw_grad_change_l2') if traces else ('grad_change_l2',)
  fig, axes = plt.subplots(len(kinds), len(patterns), figsize=(5 * len(patterns), 3.4 * len(kinds)),
                           squeeze=False, sharey=True)
  for column, pattern in enumerate(patterns):
    shown = set()
    for r in rows:
      if r['pattern'] not in (pattern, 'dense') or r.get('seed', '0') not in ('0', 0) or r['label'] in shown:
        continue  # seed 0 only; dense runs repeat across the grid's patterns
      shown.add(r['label'])
      records = diag_records(r, root, traces)
      for ax, kind in zip(axes[:, column], kinds):
        steps, values = _layer_mean(records, kind)
        if values:
          ax.plot(steps, diagnostics.moving_average(values, 5), label=r['label'], color=colour(r['label']))
          ax.axvline(finetune_start(r), color='grey', ls=':')
    for ax, kind in zip(axes[:, column], kinds):
      ax.set_title(f'{"raw" if kind.startswith("raw") else "flowed"} gradient change, {pattern.split("=")[-1]}')
      ax.set_xlabel('step')
      ax.set_ylabel('||g_t - g_t-K||_2, mean over layers')
      ax.set_yscale('log')
  axes[0, 0].legend(fontsize=6)
  save(fig, out, 'gradient_noise')


def curves(rows, out, pattern, traces):
  """Eval accuracy and mask-flip rate over training, mean over seeds, per recipe at `pattern` (and dense)."""
  steps = main_steps(rows)
  boundary = next((finetune_start(r) for r in rows if int(r['steps']) == steps and r['recipe'] != 'dense'), None)
  fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 6), sharex=True)
  for label in sorted({r['label'] for r in rows}, key=rank):
    runs = [r for r in rows if r['label'] == label and r['pattern'] in (pattern, 'dense') and int(r['steps']) == steps]
    if not runs:
      continue
    records = [diag_records(r, '', traces) for r in runs]
    for ax, series, scale in ((top, 'eval/accuracy', 100.0), (bottom, 'train/mask_flip_rate_log', 1.0)):
      points = sorted(set.intersection(*[{s for s in rec if series in rec[s]} for rec in records]))
      if points:
        ax.plot(points, [scale * np.mean([rec[s][series] for rec in records]) for s in points], marker='.',
                label=label, color=colour(label))
  for ax in (top, bottom):
    if boundary is not None:
      ax.axvline(boundary, color='grey', ls=':')
  top.set_ylabel('eval accuracy (%)')
  top.set_title(f'{pattern.split("=")[-1]}, mean over seeds; dotted: fine-tune starts')
  bottom.set_ylabel('mask-flip rate between log steps')
  bottom.set_yscale('symlog', linthresh=1e-4)  # SDGF's frame changes flip far more than the rest
  bottom.set_xlabel('step')
  top.legend(fontsize=6)
  save(fig, out, 'curves')


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
  save(fig, out, 'schedules')


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--csv', action='append', default=[], help='a sweep CSV (repeatable)')
  parser.add_argument('--root', help='the sweep root holding the runs (default: --csv\'s runs as named)')
  parser.add_argument('--traces', default='', help="sweep.py's --traces directory (instead of --root)")
  parser.add_argument('--curves_pattern', default='', help='with --traces: the pattern of curves.png')
  parser.add_argument('--length_pattern', default='',
                      help='only accuracy_vs_steps.png: final accuracy against run length at this pattern')
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
    if args.length_pattern:  # a figure of its own, from runs of every length
      accuracy_vs_steps(rows, args.out, args.length_pattern)
      return
    accuracy_vs_sparsity(rows, args.out)
    accuracy_vs_flops(rows, args.out)
    if args.root or args.traces:
      gradient_noise(rows, args.out, args.noise_patterns.split(','), args.root, args.traces)
    if args.traces and args.curves_pattern:
      curves(rows, args.out, args.curves_pattern, args.traces)


if __name__ == '__main__':
  main()
