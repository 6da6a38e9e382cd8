import numpy as np
import pytest

from pgf_sparsity.analysis import diagnostics
from pgf_sparsity.training import metric_writers
from pgf_sparsity.training import train

import os
import sys
sys.path.insert(0, os.path.dirname(__file__))
from helpers import load_config  # noqa: E402


def test_gradient_noise_statistics_by_hand():
  noise = diagnostics.GradientNoise()
  g1 = np.array([[3.0, -4.0], [1.0, 0.0]])
  m1 = np.array([[True, False], [False, True]])
  first = noise.update({'layer/kernel': g1}, {'layer/kernel': m1})
  assert first['layer/grad_kept_l2'] == pytest.approx(3.0)        # kept: 3, 0
  assert first['layer/grad_pruned_l2'] == pytest.approx(np.sqrt(17.0))  # pruned: -4, 1
  assert first['layer/grad_pruned_max'] == 4.0
  assert first['layer/grad_kept_std'] == pytest.approx(1.5)
  assert 'layer/grad_change_l2' not in first
  g2 = g1 + np.array([[1.0, 1.0], [1.0, 1.0]])
  m2 = np.array([[True, True], [False, True]])
  second = noise.update({'layer/kernel': g2}, {'layer/kernel': m2})
  assert second['layer/grad_change_l2'] == pytest.approx(2.0)
  assert second['layer/grad_change_std'] == pytest.approx(0.0)
  assert second['layer/mask_flips'] == pytest.approx(0.25)


def test_raw_gradient_is_measured_beside_the_flowed_one():
  noise = diagnostics.GradientNoise()
  mask = {'layer/kernel': np.array([[True, False]])}
  raw = {'layer/kernel': np.array([[2.0, -6.0]])}
  flowed = {'layer/kernel': np.array([[2.0, -0.6]])}  # decayed flow, beta = 0.1
  first = noise.update(flowed, mask, raw)
  assert first['layer/raw_grad_pruned_l2'] == pytest.approx(6.0)
  assert first['layer/grad_pruned_l2'] == pytest.approx(0.6)
  assert first['layer/raw_grad_kept_l2'] == first['layer/grad_kept_l2'] == pytest.approx(2.0)
  second = noise.update(flowed, mask, {'layer/kernel': np.array([[2.0, -2.0]])})
  assert second['layer/raw_grad_change_l2'] == pytest.approx(4.0)
  assert second['layer/grad_change_l2'] == pytest.approx(0.0)


def test_moving_average():
  np.testing.assert_allclose(diagnostics.moving_average([1, 2, 3, 4], 2), [1, 1.5, 2.5, 3.5])


@pytest.mark.parametrize('recipe', ['srste,flow=ste', 'dense', 'mdgf_exponential'])
def test_diagnostics_are_logged_every_k_steps(recipe, tmp_path):
  config = load_config('digits', f'recipe={recipe},steps=30')
  config.diagnostics_every_steps = 10
  train.train_and_evaluate(config, str(tmp_path))
  diag = [r for r in metric_writers.read_jsonl(str(tmp_path)) if r['split'] == 'diag']
  assert [r['step'] for r in diag] == [0, 10, 20]
  layer = 'Transformer/encoderblock_0/mlp/fc1'
  assert f'{layer}/grad_change_l2' in diag[1] and f'{layer}/grad_change_l2' not in diag[0]
  assert all(np.isfinite(v) for r in diag for k, v in r.items() if k != 'split')
  if recipe == 'dense':  # nothing is pruned
    assert f'{layer}/grad_pruned_l2' not in diag[1] and diag[1][f'{layer}/mask_flips'] == 0.0
  else:
    assert diag[1][f'{layer}/grad_pruned_l2'] > 0.0
    # the flow never touches kept entries; the decayed flow scales pruned ones by beta in (0, 1)
    assert diag[1][f'{layer}/grad_kept_l2'] == pytest.approx(diag[1][f'{layer}/raw_grad_kept_l2'], rel=1e-6)
    if recipe == 'mdgf_exponential':
      assert 0.0 < diag[1][f'{layer}/grad_pruned_l2'] < diag[1][f'{layer}/raw_grad_pruned_l2']
