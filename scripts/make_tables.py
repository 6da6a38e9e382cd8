r"""Paper-style markdown tables, and the pre-registered findings, from sweep CSVs (scripts/sweep.py).

  .venv/bin/python scripts/make_tables.py --csv=results/fashion_mnist.csv > results/tables.md
  .venv/bin/python scripts/make_tables.py --csv=A.csv --csv=B.csv --findings > findings.md
  .venv/bin/python scripts/make_tables.py --csv=A.csv --metric=loss --traces=DIR

Table 1: rows are N:M patterns, columns recipes (with their gradient flow), cells mean +/- std (ddof 1) of
the final eval metric over seeds (n = number of seeds), plus the dense reference, at the run length most
runs have (or --steps). Table 2: training FLOPs of each cell relative to the dense run of the same length.
Table 3 (when the CSVs hold runs of several lengths): the metric at equal training FLOPs, interpolated
linearly in FLOPs between a cell's runs at the budget of the dense reference's shortest run. With --traces
(sweep.py's run curves): the gradient noise of each cell, flowed and raw.

--findings prints instead the README's pre-registered comparisons: at 1:8, 1:32 and 1:64, MDGF-Exponential
and SDGF against SR-STE and static N:M, each the per-seed paired difference (positive: the PGF recipe is
better), its mean and 95% t interval (n - 1 degrees of freedom), and the verdict: better or worse when the
interval excludes 0, else no difference.
"""
import argparse
import collections
import csv
import gzip
import os
import sys

import numpy as np
import scipy.special

FLOWLESS = {'dense', 'srste'}  # recipes whose gradient flow is fixed


def label(row) -> str:
  return row['recipe'] if row['recipe'] in FLOWLESS else f'{row["recipe"]} ({row["flow"]})'


# metric -> (what the tables call it, scale, decimals, +1 when higher is better)
METRICS = {'accuracy': ('eval accuracy (%)', 100.0, 2, 1), 'loss': ('held-out loss', 1.0, 4, -1)}
TREATMENTS = ('mdgf_exponential (decayed)', 'sdgf_stepwise (decayed)', 'sdgf_geometric (decayed)')
BASELINES = ('srste', 'static (decayed)')
PRIMARY = ('1:8', '1:32', '1:64')


def load(paths, metric: str = 'accuracy'):
  rows = []
  for path in paths:
    with open(path) as f:
      rows += [r for r in csv.DictReader(f) if r.get(metric)]
  for r in rows:
    r['accuracy'] = float(r[metric])  # the metric of the tables, whichever it is
    r['train_flops'] = float(r['train_flops'])
    r['dense_train_flops'] = float(r['dense_train_flops'])
    r['steps'] = int(r['steps'])
    r['seconds'] = float(r.get('seconds') or 0.0)
  return rows


def cell(values, scale=100.0, decimals=2) -> str:
  values = np.asarray(values) * scale
  if len(values) == 1:
    return f'{values[0]:.{decimals}f} (n=1)'
  return f'{values.mean():.{decimals}f} ± {values.std(ddof=1):.{decimals}f} (n={len(values)})'


def main_steps(rows, steps: int = 0) -> int:
  """The run length the tables are about: `steps` if given, else the one most runs have (the grid's; other
  lengths are iso-FLOPs runs)."""
  if steps:
    if not any(r['steps'] == steps for r in rows):
      sys.exit(f'No finished run has {steps} steps.')
    return steps
  return collections.Counter(r['steps'] for r in rows).most_common(1)[0][0]


def pattern_key(pattern: str):
  if pattern == 'dense':
    return (0.0, pattern)
  nums = [int(x) for part in pattern.split() for x in part.split('=')[-1].split(':')] or [0, 0]
  return (nums[1] / max(nums[0], 1), pattern)


def tables(rows, metric: str = 'accuracy', steps: int = 0) -> str:
  name, scale, decimals, _ = METRICS[metric]
  fmt = lambda values: cell(values, scale, decimals)
  longest = main_steps(rows, steps)
  main = [r for r in rows if r['steps'] == longest]
  recipes = sorted({label(r) for r in main if r['recipe'] != 'dense'})
  patterns = sorted({r['pattern'] for r in main if r['recipe'] != 'dense'}, key=pattern_key)
  by_cell = collections.defaultdict(list)
  for r in main:
    by_cell[(r['pattern'], label(r))].append(r)
  out = [f'Final {name}, exact N:M model, mean ± std over seeds, {longest} steps.', '']
  # Dense runs ignore the N:M arguments: one per seed, however many patterns the grid crossed them with.
  dense = list({r['seed']: r['accuracy'] for r in main if r['recipe'] == 'dense'}.values())
  if dense:
    out += [f'Dense reference: {fmt(dense)}', '']
  lengths = sorted({r['steps'] for r in rows if r['recipe'] == 'dense'})
  if len(lengths) > 1:  # how far from convergence the main length is
    by_length = {n: list({r['seed']: r['accuracy'] for r in rows if r['recipe'] == 'dense' and r['steps'] == n}
                         .values()) for n in lengths}
    out += ['Dense by run length: ' + '; '.join(f'{n} steps {fmt(v)}' for n, v in by_length.items()), '']
  out.append('| N:M | ' + ' | '.join(recipes) + ' |')
  out.append('|---' * (len(recipes) + 1) + '|')
  for p in patterns:
    out.append(f'| {p} | ' + ' | '.join(fmt([r['accuracy'] for r in by_cell[(p, rec)]]) if by_cell[(p, rec)]
                                         else '-' for rec in recipes) + ' |')
  out += ['', 'Training FLOPs relative to the dense run of the same length.', '']
  out.append('| N:M | ' + ' | '.join(recipes) + ' |')
  out.append('|---' * (len(recipes) + 1) + '|')
  for p in patterns:
    cells = []
    for rec in recipes:
      runs = by_cell[(p, rec)]
      cells.append(f'{np.mean([r["train_flops"] / r["dense_train_flops"] for r in runs]):.3f}' if runs else '-')
    out.append(f'| {p} | ' + ' | '.join(cells) + ' |')
  if len({r['steps'] for r in rows}) > 1:
    out += ['', iso_flops_table(rows, recipes, patterns, metric)]
  return '\n'.join(out) + '\n'


def iso_flops_table(rows, recipes, patterns, metric: str = 'accuracy') -> str:
  name, scale, decimals, _ = METRICS[metric]
  dense = [r for r in rows if r['recipe'] == 'dense']
  if not dense:
    return f'{name} at equal training FLOPs: needs dense runs.'
  budget = min(r['train_flops'] for r in dense)
  out = [f'{name[0].upper()}{name[1:]} at equal training FLOPs ({budget:.3g}, the shortest dense run), '
         'interpolated in FLOPs between runs of different lengths (mean over seeds).', '',
         '| N:M | ' + ' | '.join(recipes) + ' |', '|---' * (len(recipes) + 1) + '|']
  for p in patterns:
    cells = []
    for rec in recipes:
      points = collections.defaultdict(list)
      for r in rows:
        if r['pattern'] == p and label(r) == rec:
          points[r['train_flops']].append(r['accuracy'])
      xs = sorted(points)
      if len(xs) < 2 or not xs[0] <= budget <= xs[-1]:
        cells.append('-')
      else:
        cells.append(f'{scale * np.interp(budget, xs, [np.mean(points[x]) for x in xs]):.{decimals}f}')
    out.append(f'| {p} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(out)


def paired(rows, treatment: str, baseline: str, pattern: str, sign: int):
  """(differences by seed, treatment minus baseline, signed so that positive favours the treatment)."""
  by_seed = {name: {r['seed']: r['accuracy'] for r in rows if label(r) == name and r['pattern'] == pattern}
             for name in (treatment, baseline)}
  seeds = sorted(set(by_seed[treatment]) & set(by_seed[baseline]))
  return np.array([sign * (by_seed[treatment][s] - by_seed[baseline][s]) for s in seeds])


def findings(rows, metric: str = 'accuracy', steps: int = 0) -> str:
  name, scale, decimals, sign = METRICS[metric]
  steps = main_steps(rows, steps)
  main = [r for r in rows if r['steps'] == steps]
  patterns = sorted({r['pattern'] for r in main if r['pattern'].split('=')[-1] in PRIMARY}, key=pattern_key)
  unit = ' points' if metric == 'accuracy' else ''
  hours = sum(r['seconds'] for r in main) / 3600
  out = [f'Paired differences in final {name} at {steps} steps (positive: the first recipe is better), mean '
         f'and 95% t interval over seeds ({len(main)} runs of that length, {hours:.1f} hours of run time, one CPU '
         'thread each):',
         '']
  verdicts = collections.Counter()
  for pattern in patterns:
    for treatment in TREATMENTS:
      for baseline in BASELINES:
        diffs = scale * paired(main, treatment, baseline, pattern, sign)
        if len(diffs) < 2:
          continue
        # the t distribution's 97.5% quantile (scipy.stats.t.ppf, whose import is slower)
        half = scipy.special.stdtrit(len(diffs) - 1, 0.975) * diffs.std(ddof=1) / np.sqrt(len(diffs))
        low, high = diffs.mean() - half, diffs.mean() + half
        verdict = 'better' if low > 0 else 'worse' if high < 0 else 'no difference'
        verdicts[verdict] += 1
        out.append(f'- {pattern}: {treatment} vs {baseline}: {diffs.mean():+.{decimals}f}{unit} '
                   f'(95% CI {low:+.{decimals}f} to {high:+.{decimals}f}, n={len(diffs)}): **{verdict}**')
  out += ['', f'In all: {sum(verdicts.values())} comparisons; the PGF recipe is better in {verdicts["better"]}, '
          f'worse in {verdicts["worse"]}, no different in {verdicts["no difference"]}.']
  return '\n'.join(out) + '\n'


def noise_table(rows, traces: str, steps: int = 0) -> str:
  """Mean over the sparse layers, the log points after the first, and seeds, of the gradient change between
  log points (L2), flowed / raw, per cell."""
  steps = main_steps(rows, steps)
  main = [r for r in rows if r['steps'] == steps]
  cells = collections.defaultdict(lambda: collections.defaultdict(list))
  for r in main:
    path = os.path.join(traces, r['run'] + '.csv.gz')
    if not os.path.exists(path):
      continue
    with gzip.open(path, 'rt', newline='') as f:
      trace = list(csv.DictReader(f))
    for kind in ('grad_change_l2', 'raw_grad_change_l2'):
      values = [float(t['value']) for t in trace if t['series'].rsplit('/', 1)[-1] == kind]
      if values:
        cells[(r['pattern'], label(r))][kind].append(np.mean(values))
  recipes = sorted({k[1] for k in cells})
  patterns = sorted({k[0] for k in cells}, key=pattern_key)
  out = ['Gradient change between log points (L2, mean over sparse layers and log points), flowed / raw.', '',
         '| N:M | ' + ' | '.join(recipes) + ' |', '|---' * (len(recipes) + 1) + '|']
  for p in patterns:
    out.append(f'| {p} | ' + ' | '.join(
        f'{np.mean(cells[(p, rec)]["grad_change_l2"]):.3g} / {np.mean(cells[(p, rec)]["raw_grad_change_l2"]):.3g}'
        if cells[(p, rec)]['raw_grad_change_l2'] else '-' for rec in recipes) + ' |')
  return '\n'.join(out) + '\n'


SUMMARY_RECIPES = {'static (decayed)': 'static N:M', 'srste': 'SR-STE', 'mdgf_exponential (decayed)': 'MDGF-Exp.',
                   'sdgf_stepwise (decayed)': 'SDGF-Stepwise'}


def summary(rows, metric: str = 'accuracy', steps: int = 0) -> str:
  """The front page's table: per N:M pattern, the mean over seeds of dense and the primary recipes."""
  name, scale, decimals, _ = METRICS[metric]
  longest = main_steps(rows, steps)
  main = [r for r in rows if r['steps'] == longest]
  dense = list({r['seed']: r['accuracy'] for r in main if r['recipe'] == 'dense'}.values())
  patterns = sorted({r['pattern'] for r in main if r['recipe'] != 'dense'}, key=pattern_key)
  mean = lambda values: f'{np.mean(values) * scale:.{decimals}f}' if values else '-'
  out = ['| N:M | dense | ' + ' | '.join(SUMMARY_RECIPES.values()) + ' |', '|---' * (len(SUMMARY_RECIPES) + 2) + '|']
  for p in patterns:
    cells = [mean([r['accuracy'] for r in main if r['pattern'] == p and label(r) == rec]) for rec in SUMMARY_RECIPES]
    out.append(f'| {p.split("=")[-1]} | {mean(dense)} | ' + ' | '.join(cells) + ' |')
  seeds = len({r['seed'] for r in main})
  return '\n'.join(out) + f'\n\nMean final {name} over {seeds} seeds, {longest} steps.\n'


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--csv', action='append', required=True, help='a sweep CSV (repeatable)')
  parser.add_argument('--metric', default='accuracy', choices=sorted(METRICS))
  parser.add_argument('--findings', action='store_true', help='the pre-registered comparisons instead of tables')
  parser.add_argument('--traces', default='', help="sweep.py's --traces directory: add the gradient-noise table")
  parser.add_argument('--hours', action='store_true', help='only the count of runs and their hours of run time')
  parser.add_argument('--summary', action='store_true', help="the front page's table of means instead of tables")
  parser.add_argument('--steps', type=int, default=0,
                      help='the run length of the main tables and findings (default: the most common one)')
  args = parser.parse_args()
  rows = load(args.csv, args.metric)
  if not rows:
    sys.exit(f'{args.csv} hold no finished runs.')
  if args.hours:
    hours = sum(r['seconds'] for r in rows) / 3600
    sys.stdout.write(f'{len(rows)} runs, {hours:.1f} hours of run time (one CPU thread each).\n')
    return
  if args.findings:
    sys.stdout.write(findings(rows, args.metric, args.steps))
    return
  if args.summary:
    sys.stdout.write(summary(rows, args.metric, args.steps))
    return
  sys.stdout.write(tables(rows, args.metric, args.steps))
  if args.traces:
    sys.stdout.write('\n' + noise_table(rows, args.traces, args.steps))


if __name__ == '__main__':
  main()
