"""GLUE's official metrics of decoded text, against values computed by hand."""
import math

import pytest

from pgf_sparsity.tasks import glue_metrics


def test_cola_matthews_correlation():
  refs = ['acceptable', 'acceptable', 'unacceptable', 'unacceptable', 'acceptable']
  preds = ['acceptable', 'unacceptable', 'unacceptable', 'acceptable', 'acceptable']
  # TP=2 (0, 4), FN=1 (1), TN=1 (2), FP=1 (3): MCC = (2*1 - 1*1) / sqrt(3*3*2*2) = 1/6.
  assert glue_metrics.metrics('cola', preds, refs)['matthews_corr'] == pytest.approx(100 / 6)
  # A garbled prediction counts as "not acceptable".
  assert glue_metrics.metrics('cola', ['acceptable', 'xyz'], ['acceptable', 'unacceptable'])['matthews_corr'] == 100.0


def test_mrpc_f1_and_accuracy_and_their_mean():
  refs = ['equivalent', 'equivalent', 'not_equivalent', 'not_equivalent']
  preds = ['equivalent', 'not_equivalent', 'equivalent', 'not_equivalent']
  out = glue_metrics.metrics('mrpc', preds, refs)  # precision 1/2, recall 1/2
  assert out['f1'] == pytest.approx(50.0) and out['accuracy'] == pytest.approx(50.0)
  assert out['glue_score'] == pytest.approx(50.0)


def test_stsb_targets_and_correlations():
  from pgf_sparsity.data import tfds_text  # pylint: disable=g-import-not-at-top  (TensorFlow datasets)
  assert [tfds_text.stsb_target(s) for s in (3.81, 0.0, 4.99, 2.5)] == ['3.8', '0.0', '5.0', '2.4']
  refs = ['1.0', '2.0', '3.0', '4.0']
  out = glue_metrics.metrics('stsb', ['1.0', '2.2', '2.9', '5.0'], refs)
  assert out['spearman'] == pytest.approx(100.0)  # same order
  x, y = [1.0, 2.2, 2.9, 5.0], [1.0, 2.0, 3.0, 4.0]
  mx, my = sum(x) / 4, sum(y) / 4
  r = sum((a - mx) * (b - my) for a, b in zip(x, y)) / math.sqrt(
      sum((a - mx) ** 2 for a in x) * sum((b - my) ** 2 for b in y))
  assert out['pearson'] == pytest.approx(100 * r)
  assert glue_metrics.metrics('stsb', ['oops', '2.0', '3.0', '4.0'], refs)['pearson'] < 100.0  # undecodable: -1


def test_glue_average_counts_two_metric_tasks_once():
  per_task = {'sst2': glue_metrics.metrics('sst2', ['positive'], ['positive']),  # 100
              'mrpc': {'f1': 80.0, 'accuracy': 60.0, 'glue_score': 70.0}}
  assert glue_metrics.average(per_task) == pytest.approx(85.0)


def test_glue_average_script_reads_finished_runs(tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  from helpers import ROOT  # pylint: disable=g-import-not-at-top
  for task, evaluation in (('cola', {'glue_matthews_corr': 40.0, 'glue_score': 40.0, 'accuracy': 0.3}),
                           ('mrpc', {'glue_f1': 80.0, 'glue_accuracy': 70.0, 'glue_score': 75.0})):
    (tmp_path / task).mkdir()
    (tmp_path / task / 'config.json').write_text(json.dumps({'dataset': {'tfds_name': f'glue/{task}'}}))
    (tmp_path / task / 'results.json').write_text(json.dumps({'step': 10, 'eval': evaluation}))
  out = subprocess.run([sys.executable, 'scripts/glue_average.py', str(tmp_path / 'cola'), str(tmp_path / 'mrpc')],
                       cwd=ROOT, capture_output=True, text=True, check=True).stdout
  assert '| cola | matthews_corr 40.00 | 40.00 |' in out
  assert '| mrpc | f1 80.00, accuracy 70.00 | 75.00 |' in out
  assert '| GLUE average (2 tasks) | | 57.50 |' in out
