"""GLUE as T5 scores it: decoded text compared with the label's text, each task with its official metrics (x100),
and the GLUE average (tasks with two metrics count their mean once).

  cola: Matthews correlation; mrpc, qqp: F1 of the positive class and accuracy; stsb: Pearson and Spearman
  of the decoded number (targets are the score rounded to 0.2, e.g. "3.8", as in T5: data/tfds_text.py);
  the others accuracy.
"""
from typing import Dict, List, Mapping

import numpy as np

TASKS = ('cola', 'sst2', 'mrpc', 'qqp', 'stsb', 'mnli', 'qnli', 'rte', 'wnli')
_POSITIVE = {'cola': 'acceptable', 'mrpc': 'equivalent', 'qqp': 'duplicate'}


def _number(text: str) -> float:
  try:
    return float(text)
  except ValueError:
    return -1.0  # T5's default for an undecodable number


def metrics(task: str, predictions: List[str], references: List[str]) -> Dict[str, float]:
  """The task's official metrics of decoded predictions against the references, plus `glue_score`, their
  mean (what the GLUE average takes of this task)."""
  from scipy import stats  # pylint: disable=g-import-not-at-top
  from sklearn import metrics as sk  # pylint: disable=g-import-not-at-top
  predictions = [p.strip() for p in predictions]
  if task == 'stsb':
    guessed, true = np.array([_number(p) for p in predictions]), np.array([float(r) for r in references])
    out = {'pearson': 100 * stats.pearsonr(guessed, true)[0], 'spearman': 100 * stats.spearmanr(guessed, true)[0]}
  else:
    out = {'accuracy': 100 * float(np.mean([p == r for p, r in zip(predictions, references)]))}
    if task in _POSITIVE:
      true = [r == _POSITIVE[task] for r in references]
      guessed = [p == _POSITIVE[task] for p in predictions]
      if task == 'cola':
        out = {'matthews_corr': 100 * sk.matthews_corrcoef(true, guessed)}
      else:
        out['f1'] = 100 * sk.f1_score(true, guessed, zero_division=0.0)
  out = {k: float(np.nan_to_num(v)) for k, v in out.items()}  # constant predictions: no correlation, 0
  out['glue_score'] = float(np.mean(list(out.values())))
  return out


def average(per_task: Mapping[str, Mapping[str, float]]) -> float:
  """The GLUE average over the tasks given ({task: its metrics()})."""
  return float(np.mean([per_task[task]['glue_score'] for task in per_task]))
