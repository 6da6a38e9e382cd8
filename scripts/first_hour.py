"""The README's first-hour figures as data: setup, the main job and the test command, each timed and recorded
with its machine and commit in results/first_hour.csv, from which the README's paragraph is generated.

  .venv/bin/python scripts/first_hour.py --measure=main_job      # README command 1 (after setup), a new workdir
  .venv/bin/python scripts/first_hour.py --measure=test_command  # a clean clone of HEAD: CI=true bash .ci/run
  .venv/bin/python scripts/first_hour.py --measure=setup         # a clean clone of HEAD: bash scripts/setup.sh
  .venv/bin/python scripts/first_hour.py --summary=results/first_hour.md   # the README's paragraph, from the data

Measure with nothing else running: the figures are wall times. The clones start without `.venv`, as CI does.
"""
import argparse
import csv
import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import machine  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSV = os.path.join(ROOT, 'results', 'first_hour.csv')
FIELDS = ('what', 'seconds', 'test_seconds', 'tests', 'accuracy', 'cpu', 'commit')
MAIN_JOB = [os.path.join('.venv', 'bin', 'python'), '-m', 'pgf_sparsity.main', '--config=configs/fashion_mnist.py']


def _timed(command, cwd, env=None):
  start = time.perf_counter()
  done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
  if done.returncode:
    sys.exit(f'error: {" ".join(command)} failed (exit {done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}')
  return time.perf_counter() - start, done.stdout + done.stderr


def _clean_clone(directory: str) -> str:
  clone = os.path.join(directory, 'clone')
  subprocess.run(['git', 'clone', '-q', ROOT, clone], check=True)
  return clone


def measure(what: str):
  """Runs one of the README's commands; returns its row and the command's output."""
  row = dict(what=what, test_seconds='', tests='', accuracy='', cpu=machine.hardware(),
             commit=machine.commit())
  with tempfile.TemporaryDirectory() as directory:
    if what == 'main_job':
      workdir = os.path.join(directory, 'fashion_mnist')
      row['seconds'], output = _timed(MAIN_JOB + [f'--workdir={workdir}'], ROOT)
      with open(os.path.join(workdir, 'metrics.jsonl')) as f:
        evals = [r for r in map(json.loads, f) if r['split'] == 'eval']
      row['accuracy'] = f"{100 * evals[-1]['accuracy']:.2f}"
    elif what == 'setup':
      row['seconds'], output = _timed(['bash', 'scripts/setup.sh'], _clean_clone(directory))
    else:
      row['seconds'], output = _timed(['bash', '.ci/run'], _clean_clone(directory), dict(os.environ, CI='true'))
      passed = re.findall(r'(\d+) passed.* in ([\d.]+)s', output)[-1]
      row['tests'], row['test_seconds'] = int(passed[0]), f'{float(passed[1]):.0f}'
  row['seconds'] = f"{row['seconds']:.0f}"
  return row, output


def minutes(seconds) -> str:
  seconds = round(float(seconds))
  return f'{seconds // 60} min {seconds % 60} s'


def _figure(row) -> str:
  if row['what'] == 'setup':
    return f"setup of a fresh `.venv` {minutes(row['seconds'])}"
  if row['what'] == 'main_job':
    return f"the main job {minutes(row['seconds'])} ({row['accuracy']}%)"
  return (f"the test command from a clean clone {minutes(row['seconds'])} ({row['tests']} tests; the tests "
          f"{minutes(row['test_seconds'])})")


def summary(rows) -> str:
  """The README's paragraph: the latest figure of each kind on each CPU, with its commit."""
  latest = {}
  for row in rows:
    latest[(row['cpu'], row['what'])] = row
  parts = {}
  for (cpu, what), row in latest.items():
    parts.setdefault(cpu, []).append(f"{_figure(row)}, commit {row['commit']}")
  sentences = [f"{cpu}: {'; '.join(texts)}." for cpu, texts in parts.items()]
  text = ('Measured with nothing else running (`results/first_hour.csv`, by `scripts/first_hour.py`). '
          + ' '.join(sentences))
  return textwrap.fill(text, width=116) + '\n'


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--measure', choices=('main_job', 'test_command', 'setup'), help='time it; add a row')
  parser.add_argument('--summary', default='', help="write the README's paragraph to this file")
  args = parser.parse_args()
  if args.measure:
    row, output = measure(args.measure)
    sys.stdout.write(''.join(output.splitlines(keepends=True)[-40:]))
    with open(CSV, 'a', newline='') as f:
      csv.DictWriter(f, FIELDS).writerow(row)
    print(row)
  with open(CSV, newline='') as f:
    rows = list(csv.DictReader(f))
  if args.summary:
    with open(args.summary, 'w') as f:
      f.write(summary(rows))


if __name__ == '__main__':
  main()
