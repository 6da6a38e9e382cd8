"""Results are data: the study's tables, findings and summary, quoted in docs/study.md and the README, are
regenerated from the committed CSVs and run traces (scripts/run_study_v2.sh tables), and the README's timings
from results/first_hour.csv, and must match what is committed."""
import csv
import math
import os
import re
import shutil
import subprocess
import sys

from helpers import ROOT

STUDY = os.path.join(ROOT, 'results', 'study_v2')


def test_study_v2_tables_and_findings_regenerate_from_the_committed_data(tmp_path):
  out = tmp_path / 'study_v2'
  generated = lambda directory, names: [n for n in names if n.endswith('.md') or (
      directory == STUDY and n in ('vision', 'language'))]  # the outputs of `tables`, not its inputs
  shutil.copytree(STUDY, out, ignore=generated)
  env = dict(os.environ, STUDY_OUT=str(out), TF_CPP_MIN_LOG_LEVEL='3')
  done = subprocess.run(['bash', 'scripts/run_study_v2.sh', 'tables'], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=600)
  assert done.returncode == 0, done.stderr
  for name in ('tables.md', 'findings.md', 'summary.md'):
    with open(os.path.join(STUDY, name)) as f:
      assert (out / name).read_text() == f.read(), name
  for figure in ('accuracy_vs_sparsity', 'gradient_noise', 'curves', 'accuracy_vs_steps'):
    assert (out / 'vision' / f'{figure}.png').stat().st_size > 5000
  with open(os.path.join(ROOT, 'docs', 'study.md')) as f:
    assert (out / 'findings.md').read_text() in f.read()  # the study's page quotes the findings verbatim
  with open(os.path.join(ROOT, 'README.md')) as f:
    assert (out / 'summary.md').read_text() in f.read()  # and the front page the summary


def test_the_readme_first_hour_figures_regenerate_from_the_committed_data(tmp_path):
  """The README's timings of setup, the main job and the test command come from results/first_hour.csv
  (scripts/first_hour.py), and the commands' stated 'N to M minutes' span every recorded run."""
  done = subprocess.run([sys.executable, 'scripts/first_hour.py', f'--summary={tmp_path / "first_hour.md"}'],
                        cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert done.returncode == 0, done.stderr[-2000:]
  with open(os.path.join(ROOT, 'results', 'first_hour.md')) as f:
    assert (tmp_path / 'first_hour.md').read_text() == f.read()
  with open(os.path.join(ROOT, 'README.md')) as f:
    readme = f.read()
  assert (tmp_path / 'first_hour.md').read_text() in readme
  with open(os.path.join(ROOT, 'results', 'first_hour.csv'), newline='') as f:
    rows = list(csv.DictReader(f))
  for what, stated in (('main_job', r'(\d+) to (\d+) minutes after setup'),
                       ('test_command', r'(\d+) to (\d+) minutes, setup')):
    minutes = [float(row['seconds']) / 60 for row in rows if row['what'] == what]
    low, high = map(int, re.search(stated, readme).groups())
    assert (low, high) == (math.floor(min(minutes)), math.ceil(max(minutes))), what  # every recorded run's range
