r"""Runs a grid of one config, resumably, optionally in parallel processes, and collects one CSV.

  .venv/bin/python scripts/sweep.py --config=configs/fashion_mnist.py --root=workdirs/sweep \
      --grid='recipe=static|srste,flow=ste|mdgf_exponential' --grid='ff=2:4|1:8' --grid='seed=0|1' \
      --set='steps=1000' --parallel=2 --csv=results/fashion_mnist.csv

A --grid axis is name=v1|v2|...; a name starting with 'config.' is a --config.<key>=<value> override, any
other name is a config-file argument (a value may carry more arguments after a comma, e.g.
'srste,flow=ste'). --set adds fixed arguments the same way. Each run's workdir is named after its grid
values; a run with results.json is finished and skipped, a half-finished one resumes from its checkpoint.
Each workdir records the commit that started it (DIR/commit.txt): a run started by another commit is refused
(neither resumed nor collected) unless --allow_other_commits.
The CSV has one row per run: the grid values, the commit, the resolved recipe/pattern/flow/alpha/SR-STE
lambda/dense and fine-tune fractions/model size/steps/seed, final eval accuracy and loss, training FLOPs
(and the dense run's), and the run's wall time, summed over the invocations that ran it (DIR/seconds.txt;
a skipped run keeps its time). With --traces=DIR, every finished run also leaves DIR/<run>.csv.gz, its
curves as data (step, series, value): eval accuracy and loss, train loss, beta and mask-flip rate, and per
sparse layer the gradient-noise diagnostic (flowed and raw), small enough to commit.
"""
import argparse
import concurrent.futures
import csv
import gzip
import io
import itertools
import json
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_axis(text: str):
  name, sep, values = text.partition('=')
  if not sep or not values:
    raise ValueError(f'A grid axis looks like name=v1|v2, got {text!r}.')
  return name, values.split('|')


def run_name(assignment) -> str:
  return '_'.join(re.sub(r'[^A-Za-z0-9.]+', '-', f'{k.replace("config.", "")}-{v}') for k, v in assignment)


def command(config: str, workdir: str, assignment, fixed):
  file_args, overrides = [], []
  for name, value in list(fixed) + list(assignment):
    if name.startswith('config.'):
      overrides.append(f'--{name}={value}')
    else:
      file_args.append(f'{name}={value}')
  arg = ','.join(file_args)
  return [sys.executable, '-m', 'pgf_sparsity.main', f'--config={config}' + (f':{arg}' if arg else ''),
          f'--workdir={workdir}', *overrides]


def current_commit() -> str:
  """The checkout's commit (with -dirty when tracked files changed), or 'unknown' outside git."""
  try:
    return subprocess.run(['git', 'describe', '--always', '--dirty', '--abbrev=12'], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return 'unknown'


def recorded_commit(workdir: str, commit: str) -> str:
  """The commit that started the run in `workdir`: `commit` when it starts now, 'unknown' for a run that
  was started before commits were recorded."""
  path = os.path.join(workdir, 'commit.txt')
  if not os.path.exists(path):
    started_earlier = os.path.exists(os.path.join(workdir, 'config.json'))
    os.makedirs(workdir, exist_ok=True)
    with open(path, 'w') as f:
      f.write(('unknown' if started_earlier else commit) + '\n')
  with open(path) as f:
    return f.read().strip()


def run_one(cmd, workdir: str, threads: int, commit: str, allow_other_commits: bool):
  started_by = recorded_commit(workdir, commit)
  if started_by != commit and not allow_other_commits:
    return f'refused: started by {started_by}', 0.0
  if os.path.exists(os.path.join(workdir, 'results.json')):
    return 'skipped', 0.0
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  if threads:
    env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') + ' --xla_cpu_multi_thread_eigen=false '
                        f'intra_op_parallelism_threads={threads}').strip()
  os.makedirs(workdir, exist_ok=True)
  start = time.time()
  with open(os.path.join(workdir, 'sweep.log'), 'a') as log:
    proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
  seconds = time.time() - start
  total = run_seconds(workdir) + seconds  # over the invocations that ran it
  with open(os.path.join(workdir, 'seconds.txt'), 'w') as f:
    f.write(f'{total:.1f}\n')
  return ('ok' if proc.returncode == 0 else f'failed ({proc.returncode})'), seconds


def run_seconds(workdir: str) -> float:
  """The run's wall time so far, over every invocation that ran it (0 before the first)."""
  path = os.path.join(workdir, 'seconds.txt')
  if not os.path.exists(path):
    return 0.0
  with open(path) as f:
    return float(f.read())


def _model_size(model) -> str:
  keys = ('variant', 'width', 'depth', 'mlp_dim', 'num_heads', 'patch_size', 'd_model', 'd_ff')
  return ' '.join(f'{k}={model[k]}' for k in keys if model.get(k) is not None)


def collect(workdir: str, assignment, status: str, seconds: float):
  row = {k: v for k, v in assignment}
  row.update(run=os.path.basename(workdir), status=status, seconds=round(run_seconds(workdir) or seconds, 1))
  with open(os.path.join(workdir, 'commit.txt')) as f:
    row['commit'] = f.read().strip()
  if status.startswith('refused'):
    return row
  config_path = os.path.join(workdir, 'config.json')
  if os.path.exists(config_path):
    with open(config_path) as f:
      config = json.load(f)
    sparsity = config.get('sparsity', {})
    row['recipe'] = sparsity.get('recipe')
    row['flow'] = sparsity.get('flow', sparsity.get('gradient_flow'))  # the key's name before the house change
    row['seed'] = config.get('seed')
    row['steps'] = config.get('total_steps')
    row['alpha'] = sparsity.get('alpha')
    row['srste_lambda'] = sparsity.get('srste_lambda')
    row['dense_fraction'] = sparsity.get('dense_fraction')
    row['finetune_fraction'] = sparsity.get('finetune_fraction')
    row['model'] = _model_size(config.get('model', {}))
    targets = sparsity.get('targets') or {}
    row['pattern'] = ('dense' if row['recipe'] == 'dense' else
                      ' '.join(f'{k}={t["n"]}:{t["m"]}' for k, t in sorted(targets.items())))
  results_path = os.path.join(workdir, 'results.json')
  if os.path.exists(results_path):
    with open(results_path) as f:
      results = json.load(f)
    row.update(accuracy=results['eval']['accuracy'], loss=results['eval']['loss'],
               train_flops=results['train_flops'], dense_train_flops=results['dense_train_flops'])
  return row


_TRACE_KEYS = {'eval': ('accuracy', 'loss'), 'train': ('loss', 'beta', 'mask_flip_rate_log'),
               'diag': ('grad_kept_std', 'grad_pruned_std', 'raw_grad_kept_std', 'raw_grad_pruned_std',
                        'grad_change_l2', 'raw_grad_change_l2', 'mask_flips')}


def write_trace(workdir: str, out_dir: str) -> None:
  """DIR/<run>.csv.gz: the run's curves from its metrics.jsonl, long format, 5 significant digits."""
  rows = []
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f if line.strip()]
  for record in records:
    keys = _TRACE_KEYS.get(record.get('split'), ())
    for name, value in record.items():
      if isinstance(value, (int, float)) and (name in keys or name.rsplit('/', 1)[-1] in keys):
        series = name if record['split'] == 'diag' else f"{record['split']}/{name}"
        rows.append((record['step'], series, f'{value:.5g}'))
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, os.path.basename(workdir) + '.csv.gz')
  with gzip.GzipFile(path, 'wb', mtime=0) as raw, io.TextIOWrapper(raw, newline='') as f:  # same bytes each time
    writer = csv.writer(f)
    writer.writerow(('step', 'series', 'value'))
    writer.writerows(rows)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--config', required=True)
  parser.add_argument('--root', required=True, help='parent directory of the run workdirs')
  parser.add_argument('--grid', action='append', default=[], help='name=v1|v2|...')
  parser.add_argument('--set', action='append', default=[], help='name=value, fixed for every run')
  parser.add_argument('--parallel', type=int, default=1, help='runs at a time')
  parser.add_argument('--threads', type=int, default=0, help='XLA CPU threads per run (0: XLA default)')
  parser.add_argument('--csv', required=True)
  parser.add_argument('--allow_other_commits', action='store_true',
                      help='resume and collect runs that another commit started')
  parser.add_argument('--traces', default='', help='directory for each finished run\'s curves as a CSV')
  args = parser.parse_args()
  commit = current_commit()
  axes = [parse_axis(a) for a in args.grid]
  fixed = [parse_axis(s) for s in args.set]
  fixed = [(name, values[0]) for name, values in fixed]
  assignments = [list(zip([n for n, _ in axes], combo)) for combo in itertools.product(*[v for _, v in axes])]
  jobs = []
  for assignment in assignments:
    workdir = os.path.join(os.path.abspath(args.root), run_name(assignment))
    jobs.append((assignment, workdir, command(args.config, workdir, assignment, fixed)))

  def execute(job):
    assignment, workdir, cmd = job
    status, seconds = run_one(cmd, workdir, args.threads, commit, args.allow_other_commits)
    sys.stdout.write(f'{status:>10}  {seconds:7.1f}s  {os.path.basename(workdir)}\n')
    sys.stdout.flush()
    if args.traces and os.path.exists(os.path.join(workdir, 'results.json')):
      write_trace(workdir, args.traces)
    return collect(workdir, assignment, status, seconds)

  with concurrent.futures.ThreadPoolExecutor(max(args.parallel, 1)) as pool:
    rows = list(pool.map(execute, jobs))
  columns = []
  for row in rows:
    columns += [c for c in row if c not in columns]
  os.makedirs(os.path.dirname(os.path.abspath(args.csv)), exist_ok=True)
  with open(args.csv, 'w', newline='') as f:
    writer = csv.DictWriter(f, columns)
    writer.writeheader()
    writer.writerows(rows)
  failed = [r['run'] for r in rows if r['status'].startswith(('failed', 'refused'))]
  sys.stdout.write(f'{len(rows)} runs, {len(failed)} failed -> {args.csv}\n')
  sys.exit(1 if failed else 0)


if __name__ == '__main__':
  main()
