import math
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgf_sparsity import sdgf_patterns
from pgf_sparsity.sparsity import Recipe
from pgf_sparsity.sparsity import schedules

sys.path.insert(0, os.path.dirname(__file__))
from helpers import load_config  # noqa: E402

FF = {'ff': {'regex': '.*kernel', 'n': 1, 'm': 8}}


def test_spec_worked_examples_of_exponential_beta():
  # docs/method.md: alpha = 1e-4 -> 0.607 at 5k, 0.368 at 10k, 0.10 at 23.0k, 0.01 at 46.1k.
  for t, expected in [(5_000, 0.607), (10_000, 0.368), (23_000, 0.10), (46_100, 0.01)]:
    assert float(schedules.beta('exponential', t, 1e-4)) == pytest.approx(expected, abs=1e-3)
  assert float(schedules.beta('exponential', 0, 1e-4)) == 1.0


def test_linear_beta_reaches_and_stays_at_zero():
  alpha = 1e-3
  assert float(schedules.beta('linear', 0, alpha)) == 1.0
  assert float(schedules.beta('linear', 999, alpha)) == pytest.approx(1e-3, abs=1e-6)
  assert float(schedules.beta('linear', 1000, alpha)) == 0.0
  assert float(schedules.beta('linear', 5000, alpha)) == 0.0
  assert float(schedules.beta('zero', 3, alpha)) == 0.0


def test_beta_is_traceable():
  f = jax.jit(lambda t: schedules.beta('exponential', t, 0.5))
  np.testing.assert_allclose(f(jnp.arange(3)), np.exp(-0.5 * np.arange(3)), rtol=1e-6)


@pytest.mark.parametrize('kind,n,m,expected', [
    ('stepwise', 1, 8, [(7, 8), (4, 8), (2, 8), (1, 8)]),
    ('stepwise', 1, 16, [(15, 16), (8, 16), (4, 16), (2, 16), (1, 16)]),
    ('stepwise', 2, 4, [(3, 4), (2, 4)]),
    ('stepwise', 1, 4, [(3, 4), (2, 4), (1, 4)]),
    ('geometric', 1, 8, [(8, 64), (4, 32), (2, 16), (1, 8)]),
    ('geometric', 2, 4, [(16, 32), (8, 16), (4, 8), (2, 4)]),
])
def test_sdgf_patterns_follow_the_spec(kind, n, m, expected):
  assert sdgf_patterns(kind, n, m) == expected


def test_sdgf_stepwise_frame_count_is_log2_ratio_plus_one():
  for n, m in [(1, 8), (1, 32), (1, 128), (2, 8)]:
    assert len(sdgf_patterns('stepwise', n, m)) == int(math.log2(m / n)) + 1


def test_sdgf_custom_and_errors():
  assert sdgf_patterns('custom', 1, 8, [[4, 8], [1, 8]]) == [(4, 8), (1, 8)]
  with pytest.raises(ValueError, match='must end at the target'):
    sdgf_patterns('custom', 1, 8, [(4, 8)])
  with pytest.raises(ValueError, match='powers of two'):
    sdgf_patterns('stepwise', 3, 8)
  with pytest.raises(ValueError, match='Unknown SDGF'):
    sdgf_patterns('cosine', 1, 8)


@pytest.mark.parametrize('total,dense,finetune', [(100, 10, 20), (97, 0, 0), (50, 7, 0), (10, 0, 9)])
def test_phase_boundaries(total, dense, finetune):
  p = schedules.Phases(total, dense, finetune)
  phases = [p.phase(s) for s in range(total)]
  assert phases == ['dense'] * dense + ['sparse'] * (total - dense - finetune) + ['finetune'] * finetune
  assert p.sparse_clock(dense) == 0 and p.sparse_clock(dense + 5) == 5 and p.sparse_clock(0) == 0


def test_decay_clock_starts_at_the_sparse_phase():
  # Bug B2 of the reference: beta must still be 1 at the first sparse step, whatever the dense phase.
  sp = Recipe.from_config({'recipe': 'mdgf_exponential', 'alpha': 0.1, 'dense_fraction': 0.3,
                           'targets': FF}).schedule(100)
  plan = sp.plan(30)
  assert plan.phase == 'sparse'
  assert float(sp.beta(30, plan)) == 1.0
  assert float(sp.beta(40, plan)) == pytest.approx(math.exp(-1.0))
  assert sp.plan(29).phase == 'dense'


def test_phase_errors():
  with pytest.raises(ValueError, match='exceed'):
    schedules.Phases(10, 6, 5)
  with pytest.raises(ValueError, match='one unit only'):
    schedules.Duration('x', steps=1, fraction=0.5)
  with pytest.raises(ValueError, match='fraction must lie'):
    schedules.Duration('x', fraction=1.5)
  with pytest.raises(ValueError, match='finite'):
    schedules.Duration('x', epochs=float('nan'))
  with pytest.raises(ValueError, match='steps_per_epoch'):
    schedules.Duration('x', epochs=1).to_steps(10)
  assert schedules.Duration('x', epochs=2).to_steps(1000, steps_per_epoch=30) == 60
  assert schedules.Duration('x', fraction=0.25).to_steps(1000) == 250
  assert schedules.Duration('x').to_steps(1000) == 0


@pytest.mark.parametrize('sparse_steps,frames', [(100, 4), (10, 4), (7, 3), (4, 4), (1000, 5)])
def test_frames_split_the_sparse_window_equally(sparse_steps, frames):
  idx = [schedules.frame_index(t, sparse_steps, frames) for t in range(sparse_steps)]
  assert idx == sorted(idx) and idx[0] == 0 and idx[-1] == frames - 1
  lengths = [idx.count(f) for f in range(frames)]
  assert max(lengths) - min(lengths) <= 1
  for f in range(frames):
    assert idx.index(f) == schedules.frame_start(f, sparse_steps, frames)


def test_sdgf_plan_at_every_boundary():
  sp = Recipe.from_config({'recipe': 'sdgf_stepwise', 'targets': FF, 'dense_steps': 10,
                           'finetune_steps': 10}).schedule(100)
  # Sparse window [10, 90) = 80 steps, 4 frames of 20: 7:8, 4:8, 2:8, 1:8; then fine-tune 1:8.
  expected = {9: ('dense', None), 10: ('sparse', (7, 8)), 29: ('sparse', (7, 8)), 30: ('sparse', (4, 8)),
              49: ('sparse', (4, 8)), 50: ('sparse', (2, 8)), 70: ('sparse', (1, 8)),
              89: ('sparse', (1, 8)), 90: ('finetune', (1, 8)), 99: ('finetune', (1, 8))}
  for step, (phase, pattern) in expected.items():
    plan = sp.plan(step)
    assert plan.phase == phase, step
    if pattern:
      assert plan.pattern('ff') == pattern, step
      assert float(sp.beta(step, plan)) == 0.0
  ends = []
  step = 0
  while step < 100:
    step = sp.plan_end(step)
    ends.append(step)
  assert ends == [10, 30, 50, 70, 90, 100]


def test_mdgf_plan_is_one_plan_for_the_whole_sparse_phase():
  sp = Recipe.from_config({'recipe': 'mdgf_linear', 'alpha': 0.02, 'targets': FF,
                           'finetune_fraction': 0.2}).schedule(100)
  assert {sp.plan(s) for s in range(80)} == {sp.plan(0)}
  assert sp.plan(0).beta_kind == 'linear' and sp.plan(80).beta_kind == 'zero'
  assert float(sp.beta(49, sp.plan(49))) == pytest.approx(0.02, abs=1e-6)
  assert float(sp.beta(50, sp.plan(50))) == 0.0
  assert float(sp.beta(80, sp.plan(80))) == 0.0  # fine-tune forces binary masks


@pytest.mark.parametrize('kind', ['linear', 'exponential'])
def test_decay_alpha_reaches_the_target_beta_at_the_configured_point(kind):
  sparse_steps = 1350
  alpha = schedules.decay_alpha(kind, sparse_steps, target_beta=0.01, fraction=0.8)
  point = 0.8 * sparse_steps  # 1080
  assert float(schedules.beta(kind, point, alpha)) == pytest.approx(0.01, rel=1e-4)
  assert float(schedules.beta(kind, point - 100, alpha)) > 0.01  # still decaying before the point
  if kind == 'linear':  # the exponential formula would have hit 0 after ~22% of the window
    assert float(schedules.beta(kind, 0.25 * sparse_steps, alpha)) == pytest.approx(1 - 0.99 * 0.25 / 0.8)
  with pytest.raises(ValueError, match='decay'):
    schedules.decay_alpha('zero', sparse_steps)


def test_configs_derive_alpha_per_schedule():
  sparse_steps = 3000 * 0.9  # 3,000 steps, the last 10% fine-tuned
  linear = load_config('fashion_mnist', 'recipe=mdgf_linear,steps=3000').sparsity.alpha
  exponential = load_config('fashion_mnist', 'recipe=mdgf_exponential,steps=3000').sparsity.alpha
  assert linear == pytest.approx(0.99 / (0.8 * sparse_steps))
  assert exponential == pytest.approx(math.log(100) / (0.8 * sparse_steps))
  assert load_config('fashion_mnist', 'recipe=mdgf_linear,alpha=0.5').sparsity.alpha == 0.5
