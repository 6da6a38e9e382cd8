"""scripts/sweep.py, make_tables.py and plot.py on a tiny grid."""
import csv
import gzip
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from helpers import ROOT  # noqa: E402

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', JAX_PLATFORMS='cpu')


def script(name, *args):
  return subprocess.run([sys.executable, os.path.join(ROOT, 'scripts', name), *args], cwd=ROOT, env=ENV,
                        capture_output=True, text=True, timeout=600)


def _figures_and_noise_table_from_traces(table, traces, tmp_path):
  """From the committed data alone (traces): flowed and raw noise, accuracy and mask-flip curves, noise table."""
  from_traces = str(tmp_path / 'from_traces')
  plots = script('plot.py', f'--csv={table}', f'--traces={traces}', f'--out={from_traces}', '--noise_patterns=ff=1:4',
                 '--curves_pattern=ff=1:4')
  assert plots.returncode == 0, plots.stderr
  for name in ('gradient_noise', 'curves'):
    assert os.path.getsize(os.path.join(from_traces, f'{name}.png')) > 5000
  noise = script('make_tables.py', f'--csv={table}', f'--traces={traces}')
  assert noise.returncode == 0, noise.stderr
  assert 'flowed / raw' in noise.stdout and '| ff=1:4 |' in noise.stdout.split('flowed / raw')[1]


@pytest.mark.slow
def test_sweep_tables_and_plots(tmp_path):
  root, table = str(tmp_path / 'runs'), str(tmp_path / 'grid.csv')
  sweep_args = ['--config=configs/digits.py', f'--root={root}', '--grid=recipe=dense|static|srste,flow=ste',
                '--grid=ff=1:4', '--grid=seed=0|1', '--set=steps=30', '--set=config.diagnostics_every_steps=5',
                '--parallel=2', '--threads=1', f'--csv={table}']
  first = script('sweep.py', *sweep_args)
  assert first.returncode == 0, first.stdout + first.stderr
  with open(table) as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 6 and all(r['status'] == 'ok' for r in rows)
  assert {r['pattern'] for r in rows} == {'dense', 'ff=1:4'}
  assert all(0.0 <= float(r['accuracy']) <= 1.0 and float(r['train_flops']) > 0 for r in rows)
  sparse = [r for r in rows if r['recipe'] == 'static' and r['pattern'] == 'ff=1:4']
  assert float(sparse[0]['train_flops']) < float(sparse[0]['dense_train_flops'])
  commit = subprocess.run(['git', 'describe', '--always', '--dirty', '--abbrev=12'], cwd=ROOT, capture_output=True,
                          text=True).stdout.strip() or 'unknown'
  for row in rows:  # what a study needs to tell its runs apart
    assert row['commit'] == commit and row['steps'] == '30' and row['finetune_fraction'] == '0.1'
    assert row['model'] == 'width=32 depth=1 mlp_dim=64 num_heads=2 patch_size=2' and row['srste_lambda'] == '0.0002'
    assert row['alpha'] != '' and row['flow'] in ('ste', 'decayed')

  # Finished runs are skipped; a half-finished one resumes.
  half = os.path.join(root, 'recipe-static_ff-1-4_seed-0')
  os.remove(os.path.join(half, 'results.json'))
  again = script('sweep.py', *sweep_args)
  assert again.returncode == 0
  assert again.stdout.count('skipped') == 5 and 'ok' in again.stdout
  with open(table) as f:
    seconds = {r['run']: float(r['seconds']) for r in csv.DictReader(f)}
  first = {r['run']: float(r['seconds']) for r in rows}
  assert all(seconds[run] == first[run] > 0 for run in first if run != os.path.basename(half))  # skipped: kept
  assert seconds[os.path.basename(half)] > first[os.path.basename(half)]  # resumed: both invocations' time
  # A run that another commit started is refused unless asked for.
  with open(os.path.join(root, 'recipe-dense_ff-1-4_seed-1', 'commit.txt'), 'w') as f:
    f.write('0123456789ab\n')
  other = script('sweep.py', *sweep_args)
  assert other.returncode == 1 and 'refused: started by 0123456789ab' in other.stdout
  traces = tmp_path / 'traces'
  allowed = script('sweep.py', *sweep_args, '--allow_other_commits', f'--traces={traces}')
  assert allowed.returncode == 0 and allowed.stdout.count('skipped') == 6
  with gzip.open(traces / 'recipe-static_ff-1-4_seed-0.csv.gz', 'rt') as f:  # every finished run's curves, as data
    trace = list(csv.DictReader(f))
  series = {r['series'] for r in trace}
  assert {'eval/accuracy', 'train/loss', 'train/beta'} <= series
  layer = 'Transformer/encoderblock_0/mlp/fc1'
  assert {f'{layer}/grad_pruned_std', f'{layer}/raw_grad_pruned_std', f'{layer}/mask_flips'} <= series
  assert [int(r['step']) for r in trace if r['series'] == f'{layer}/raw_grad_kept_std'] == [0, 5, 10, 15, 20, 25]

  tables = script('make_tables.py', f'--csv={table}')
  assert tables.returncode == 0, tables.stderr
  assert '| N:M | srste | static (decayed) |' in tables.stdout
  assert 'Dense reference:' in tables.stdout and '(n=2)' in tables.stdout
  assert '| ff=1:4 |' in tables.stdout and 'Training FLOPs relative' in tables.stdout
  hours = script('make_tables.py', f'--csv={table}', '--hours')
  with open(table) as f:
    seconds = sum(float(r['seconds']) for r in csv.DictReader(f))
  assert hours.stdout == f'6 runs, {seconds / 3600:.1f} hours of run time (one CPU thread each).\n'

  figures = str(tmp_path / 'figures')
  plots = script('plot.py', f'--csv={table}', f'--root={root}', f'--out={figures}', '--noise_patterns=ff=1:4',
                 '--schedules', '--steps=100', '--alpha=0.05', '--pattern=1:8')
  assert plots.returncode == 0, plots.stderr
  for name in ('accuracy_vs_sparsity', 'accuracy_vs_flops', 'gradient_noise', 'schedules'):
    assert os.path.getsize(os.path.join(figures, f'{name}.png')) > 5000
  _figures_and_noise_table_from_traces(table, traces, tmp_path)


def test_iso_flops_interpolation():
  sys.path.insert(0, os.path.join(ROOT, 'scripts'))
  import make_tables  # pylint: disable=g-import-not-at-top
  rows = [dict(recipe='dense', flow='decayed', pattern='dense', seed='0', steps=100, accuracy=0.8,
               train_flops=100.0, dense_train_flops=100.0),
          dict(recipe='static', flow='ste', pattern='ff=1:4', seed='0', steps=100, accuracy=0.7,
               train_flops=50.0, dense_train_flops=100.0),
          dict(recipe='static', flow='ste', pattern='ff=1:4', seed='0', steps=300, accuracy=0.9,
               train_flops=150.0, dense_train_flops=300.0)]
  table = make_tables.iso_flops_table(rows, ['static (ste)'], ['ff=1:4'])
  assert '| ff=1:4 | 80.00 |' in table  # halfway between 50 and 150 FLOPs
  rows.append(dict(rows[0], steps=300, accuracy=0.85, train_flops=300.0, dense_train_flops=300.0))
  assert 'Dense by run length: 100 steps 80.00 (n=1); 300 steps 85.00 (n=1)' in make_tables.tables(rows)
  # as many runs at 100 as at 300 steps: the first length by default, another when asked for
  assert 'over seeds, 100 steps.' in make_tables.tables(rows)
  assert 'over seeds, 300 steps.\n\nDense reference: 85.00 (n=1)' in make_tables.tables(rows, steps=300)
  with pytest.raises(SystemExit, match='No finished run has 200 steps'):
    make_tables.tables(rows, steps=200)


def test_findings_paired_differences_intervals_and_verdicts():
  sys.path.insert(0, os.path.join(ROOT, 'scripts'))
  import make_tables  # pylint: disable=g-import-not-at-top

  def run(recipe, flow, seed, value):
    return dict(recipe=recipe, flow=flow, pattern='ff=1:8', seed=str(seed), steps=1500, accuracy=value, seconds=0.0)

  base = [0.80, 0.82, 0.84]
  rows = [run('srste', 'ste', s, v) for s, v in enumerate(base)]
  rows += [run('static', 'decayed', s, v) for s, v in enumerate(base)]
  rows += [run('mdgf_exponential', 'decayed', s, v + d) for s, (v, d) in enumerate(zip(base, [0.010, 0.011, 0.009]))]
  rows += [run('sdgf_stepwise', 'decayed', s, v + d) for s, (v, d) in enumerate(zip(base, [0.01, 0.02, 0.03]))]
  text = make_tables.findings(rows)
  # differences 1.0, 1.1, 0.9 points: mean 1.0, std 0.1, t(0.975, 2) = 4.303 -> +-0.248
  assert '(12 runs of that length, 0.0 hours of run time' in text and 'In all: 4 comparisons; the PGF recipe is better in 2, worse in 0, no different in 2.' in text
  assert '- ff=1:8: mdgf_exponential (decayed) vs srste: +1.00 points (95% CI +0.75 to +1.25, n=3): **better**' in text
  # differences 1, 2, 3 points: mean 2, std 1 -> +-2.484: the interval holds 0
  assert ('- ff=1:8: sdgf_stepwise (decayed) vs static (decayed): +2.00 points (95% CI -0.48 to +4.48, n=3): '
          '**no difference**') in text
  # read as a loss (load() puts the chosen metric under 'accuracy'), lower is better: the baselines win
  assert '(95% CI -0.0125 to -0.0075, n=3): **worse**' in make_tables.findings(rows, 'loss')


def test_accuracy_vs_steps_figure_means_seeds_per_length(tmp_path, monkeypatch):
  sys.path.insert(0, os.path.join(ROOT, 'scripts'))
  import plot  # pylint: disable=g-import-not-at-top
  figures = {}
  monkeypatch.setattr(plot, 'save', lambda fig, out, name: figures.update({name: fig}))

  def run(label, pattern, steps, seed, accuracy):
    return dict(label=label, pattern=pattern, steps=str(steps), seed=str(seed), accuracy=accuracy)

  rows = [run('dense', 'dense', 100, 0, 0.80), run('dense', 'dense', 100, 1, 0.82), run('dense', 'dense', 300, 0, 0.90),
          run('static (decayed)', 'ff=1:4', 100, 0, 0.70), run('static (decayed)', 'ff=1:4', 300, 0, 0.85),
          run('static (decayed)', 'ff=1:4', 300, 1, 0.87), run('srste', 'ff=1:8', 300, 0, 0.10)]  # another pattern
  rows.append(dict(rows[0], pattern='ff=1:4'))  # the same dense run listed again under a pattern: counted once
  plot.accuracy_vs_steps(rows, str(tmp_path), 'ff=1:4')
  ax = figures['accuracy_vs_steps'].axes[0]
  curves = {c.get_label(): c.lines[0].get_xydata().ravel().tolist() for c in ax.containers}  # x0, y0, x1, y1
  assert set(curves) == {'dense', 'static (decayed)'}
  assert curves['dense'] == pytest.approx([100, 81.0, 300, 90.0])
  assert curves['static (decayed)'] == pytest.approx([100, 70.0, 300, 86.0])
