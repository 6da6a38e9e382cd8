r"""Paper-style markdown tables from a sweep CSV (scripts/sweep.py).

  .venv/bin/python scripts/make_tables.py --csv=results/fashion_mnist.csv > results/tables.md

Table 1: rows are N:M patterns, columns recipes (with their gradient flow), cells mean +/- std of the final
eval accuracy over seeds (n = number of seeds), plus the dense reference. Table 2: training FLOPs of each
cell relative to the dense run of the same length. Table 3 (when the CSV holds runs of several lengths):
accuracy at equal training FLOPs, interpolated linearly in FLOPs between a cell's runs at the budget of
the dense reference's shortest run.
"""
import argparse
import collections
import csv
import sys

import numpy as np

FLOWLESS = {'dense', 'srste'}  # recipes whose gradient flow is fixed


def label(row) -> str:
  return row['recipe'] if row['recipe'] in FLOWLESS else f'{row["recipe"]} ({row["flow"]})'


def load(path: str):
  with open(path) as f:
    rows = [r for r in csv.DictReader(f) if r.get('accuracy')]
  for r in rows:
    r['accuracy'] = float(r['accuracy'])
    r['train_flops'] = float(r['train_flops'])
    r['dense_train_flops'] = float(r['dense_train_flops'])
    r['steps'] = int(r['steps'])
  return rows


def cell(values, scale=100.0) -> str:
  values = np.asarray(values) * scale
  if len(values) == 1:
    return f'{values[0]:.2f} (n=1)'
  return f'{values.mean():.2f} ± {values.std(ddof=1):.2f} (n={len(values)})'


def pattern_key(pattern: str):
  nums = [int(x) for part in pattern.split() for x in part.split('=')[-1].split(':')] or [0, 0]
  return (nums[1] / max(nums[0], 1), pattern)


def tables(rows) -> str:
  longest = max(r['steps'] for r in rows)
  main = [r for r in rows if r['steps'] == longest]
  recipes = sorted({label(r) for r in main if r['recipe'] != 'dense'})
  patterns = sorted({r['pattern'] for r in main if r['recipe'] != 'dense'}, key=pattern_key)
  by_cell = collections.defaultdict(list)
  for r in main:
    by_cell[(r['pattern'], label(r))].append(r)
  out = [f'Final eval accuracy (%), mean ± std over seeds, {longest} steps.', '']
  # Dense runs ignore the N:M arguments: one per seed, however many patterns the grid crossed them with.
  dense = list({r['seed']: r['accuracy'] for r in main if r['recipe'] == 'dense'}.values())
  if dense:
    out += [f'Dense reference: {cell(dense)}', '']
  out.append('| N:M | ' + ' | '.join(recipes) + ' |')
  out.append('|---' * (len(recipes) + 1) + '|')
  for p in patterns:
    out.append(f'| {p} | ' + ' | '.join(cell([r['accuracy'] for r in by_cell[(p, rec)]]) if by_cell[(p, rec)]
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
    out += ['', iso_flops_table(rows, recipes, patterns)]
  return '\n'.join(out) + '\n'


def iso_flops_table(rows, recipes, patterns) -> str:
  dense = [r for r in rows if r['recipe'] == 'dense']
  if not dense:
    return 'Accuracy at equal training FLOPs: needs dense runs.'
  budget = min(r['train_flops'] for r in dense)
  out = [f'Accuracy (%) at equal training FLOPs ({budget:.3g}, the shortest dense run), interpolated in FLOPs '
         'between runs of different lengths (mean over seeds).', '',
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
        cells.append(f'{100 * np.interp(budget, xs, [np.mean(points[x]) for x in xs]):.2f}')
    out.append(f'| {p} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(out)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--csv', required=True)
  args = parser.parse_args()
  rows = load(args.csv)
  if not rows:
    sys.exit(f'{args.csv} holds no finished runs.')
  sys.stdout.write(tables(rows))


if __name__ == '__main__':
  main()
