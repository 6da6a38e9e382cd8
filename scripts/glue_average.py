"""The GLUE table of fine-tuned runs, one finished workdir per task (configs/t5_glue.py:task=...): each task's
official metrics from its results.json (stored as glue_<metric>), and the GLUE average
(pgf_sparsity/tasks/glue_metrics.py).

  .venv/bin/python scripts/glue_average.py workdirs/t5_cola workdirs/t5_sst2 ...
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from pgf_sparsity.tasks import glue_metrics  # noqa: E402  pylint: disable=wrong-import-position

METRICS = ('matthews_corr', 'f1', 'accuracy', 'pearson', 'spearman')


def per_task_results(workdirs):
  """{task: the metrics of its finished run}; ValueError for a workdir that is not a finished GLUE run."""
  out = {}
  for workdir in workdirs:
    results_path, config_path = os.path.join(workdir, 'results.json'), os.path.join(workdir, 'config.json')
    if not os.path.exists(results_path):
      raise ValueError(f'{workdir} holds no finished run (no results.json).')
    with open(config_path) as f:
      name = json.load(f)['dataset'].get('tfds_name', '')
    if not name.startswith('glue/'):
      raise ValueError(f'{workdir} is not a GLUE run (dataset {name!r}).')
    with open(results_path) as f:
      evaluation = json.load(f)['eval']
    metrics = {k: evaluation[f'glue_{k}'] for k in METRICS if f'glue_{k}' in evaluation}
    out[name.split('/', 1)[1]] = dict(metrics, glue_score=evaluation['glue_score'])
  return out


def table(per_task) -> str:
  lines = ['| task | metrics | score |', '|---|---|---|']
  for task in sorted(per_task):
    shown = ', '.join(f'{k} {v:.2f}' for k, v in per_task[task].items() if k != 'glue_score')
    lines.append(f'| {task} | {shown} | {per_task[task]["glue_score"]:.2f} |')
  lines.append(f'| GLUE average ({len(per_task)} tasks) | | {glue_metrics.average(per_task):.2f} |')
  return '\n'.join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('workdirs', nargs='+')
  args = parser.parse_args()
  try:
    print(table(per_task_results(args.workdirs)))
  except ValueError as e:
    sys.exit(f'error: {e}')


if __name__ == '__main__':
  main()
