"""End-to-end training through train_and_evaluate on real data (sklearn digits)."""
import functools
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from pgf_sparsity import data as data_lib
from pgf_sparsity.sparsity import nm
from pgf_sparsity.sparsity import tree_paths
from pgf_sparsity.training import metric_writers
from pgf_sparsity.training import steps as steps_lib
from pgf_sparsity.training import train

sys.path.insert(0, os.path.dirname(__file__))
from helpers import ROOT, build_experiment, env_with_devices, load_config, runs_share_compiled_steps  # noqa: E402

RECIPES = ['dense', 'static', 'srste,flow=ste', 'mdgf_linear', 'mdgf_exponential', 'mdgf_exponential,flow=ste',
           'sdgf_stepwise', 'sdgf_geometric']


@pytest.mark.parametrize('recipe', RECIPES)
def test_every_recipe_trains_a_vit_and_ends_exactly_n_m(recipe, tmp_path):
  config = load_config('digits', f'recipe={recipe}')
  state, results = train.train_and_evaluate(config, str(tmp_path))
  assert results['eval']['accuracy'] > 0.7, results  # chance is 0.1
  records = metric_writers.read_jsonl(str(tmp_path))
  evals = [r for r in records if r['split'] == 'eval']
  assert [r['step'] for r in evals] == [100, 200, 300]
  assert evals[-1]['accuracy'] > evals[0]['accuracy'] or evals[0]['accuracy'] > 0.9
  train_records = [r for r in records if r['split'] == 'train']
  assert {'loss', 'accuracy', 'learning_rate', 'beta', 'steps_per_second', 'phase'} <= set(train_records[-1])
  if recipe != 'dense':  # two flip rates: step to step (mean over the interval), and since the last log
    assert 'mask_flip_rate_step' in train_records[0] and 'mask_flip_rate_log' not in train_records[0]
    assert {'mask_flip_rate_step', 'mask_flip_rate_log'} <= set(train_records[-1])
    assert 'mask_flip_rate' not in train_records[-1]
  assert os.path.exists(tmp_path / 'config.json')
  flat = tree_paths.flatten(jax.device_get(state.params))
  kernels = [p for p in flat if '/mlp/fc' in p and p.endswith('kernel')]
  assert len(kernels) == 2
  if recipe == 'dense':
    return
  assert train_records[-1]['sparsity'] == pytest.approx(0.75)
  assert train_records[-1]['nm_exact'] == 1.0
  for p in kernels:  # the exported model: binary masks at the target 1:4
    hardened = flat[p] * np.asarray(nm.nm_mask(flat[p], 1, 4))
    assert (np.asarray(nm.group_counts(hardened != 0, 4)) == 1).all()


@pytest.mark.usefixtures('shared_compiled_steps')
def test_resume_continues_and_matches_an_uninterrupted_run(tmp_path):
  config = load_config('digits', 'recipe=sdgf_stepwise,steps=120')
  config.checkpoint_every_steps = 40
  config.eval_every_steps = 60
  config.log_every_steps = 1  # every step's loss and gradient norm, not only the final parameters
  full, _ = train.train_and_evaluate(config, str(tmp_path / 'full'))
  part, _ = train.train_and_evaluate(config, str(tmp_path / 'split'), max_steps_this_run=50)
  assert int(part.step) == 50
  resumed, results = train.train_and_evaluate(config, str(tmp_path / 'split'))
  assert int(resumed.step) == 120
  per_step = lambda run: [(r['step'], r['loss'], r['grad_norm']) for r in
                          metric_writers.read_jsonl(str(tmp_path / run)) if r['split'] == 'train']
  assert [s for s, _, _ in per_step('split')] == list(range(1, 121))
  assert per_step('split') == per_step('full')  # bit-identical, step by step, across the resume
  for a, b in zip(jax.tree.leaves(full.params), jax.tree.leaves(resumed.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # A finished run resumed again does nothing more.
  again, _ = train.train_and_evaluate(config, str(tmp_path / 'split'))
  assert int(again.step) == 120


ONE_STEP = r'''
import sys, numpy as np, jax
sys.path.insert(0, sys.argv[1])
from helpers import build_experiment, load_config
from pgf_sparsity.training import steps
exp, data = build_experiment(load_config('digits', 'recipe=mdgf_exponential,steps=10'))
compiled = steps.CompiledSteps(exp)
state = exp.initial_state()
plan = exp.recipe.plan(0)
state, m = compiled.train_step(plan)(state, exp.shard(data.train_batch(0)))
state, m = compiled.train_step(plan)(state, exp.shard(data.train_batch(1)))
leaves = [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state.params))]
np.savez(sys.argv[2], *leaves, loss=np.asarray(m['loss']), devices=jax.device_count())
'''


def test_eight_devices_match_one_device(tmp_path):
  outputs = {}
  for count in (1, 8):
    env = env_with_devices(count)
    out = tmp_path / f'{count}.npz'
    subprocess.run([sys.executable, '-c', ONE_STEP, os.path.dirname(__file__), str(out)], check=True, env=env,
                   cwd=ROOT, capture_output=True)
    outputs[count] = np.load(out)
  assert int(outputs[8]['devices']) == 8 and int(outputs[1]['devices']) == 1
  for key in outputs[1].files:
    if key != 'devices':
      np.testing.assert_allclose(outputs[8][key], outputs[1][key], rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize('override,message', [
    (lambda c: c.update(batch_size=0), 'batch_size'),
    (lambda c: c.update(loss='hinge'), 'config.loss'),
    (lambda c: c.sparsity.update(recipe='magnitude'), 'sparsity.recipe'),
    (lambda c: c.sparsity.targets.ff.update(m=5), 'does not divide'),
    (lambda c: c.sparsity.targets.ff.update(n=0), 'need 0 < N <= M'),
    (lambda c: c.sparsity.targets.ff.update(regex='.*/nothing/kernel'), 'matches no parameter'),
    (lambda c: c.sparsity.update(flow='half'), 'sparsity.flow'),
    (lambda c: c.model.update(name='resnet'), 'model.name'),
    (lambda c: c.optimizer.update(momentum=0.9), 'Unknown config key optimizer.momentum'),
    (lambda c: c.update(nonfinite='maybe'), 'nonfinite'),
    (lambda c: c.update(z_loss=1e-4), 'sequence-to-sequence tasks only'),
    (lambda c: c.optimizer.update(learning_rate=float('inf')), 'optimizer.learning_rate must be a finite'),
    (lambda c: c.model.update(dtype='float64'), 'model.dtype'),
])
def test_bad_config_fails_before_training(override, message, tmp_path):
  config = load_config('digits')
  override(config)
  with pytest.raises(ValueError, match=message):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run' / 'checkpoints').exists()



def test_a_sparsity_typo_fails_before_the_data_pipeline_is_built(monkeypatch, tmp_path):
  def no_data(config):
    raise AssertionError('the data pipeline was built before the config was validated')

  monkeypatch.setattr(data_lib, 'build', no_data)
  config = load_config('digits')
  config.sparsity.recipe = 'mdgf_exponentail'
  with pytest.raises(ValueError, match='sparsity.recipe'):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


def _run_steps(config, steps):
  """Masks after each of the first `steps` steps, and the jitted functions used."""
  exp, data = build_experiment(config)
  compiled = steps_lib.CompiledSteps(exp)
  state = exp.initial_state()
  history, step_metrics = [], []
  for s in range(steps):
    state, metrics_s = compiled.train_step(exp.recipe.plan(s))(state, exp.shard(data.train_batch(s)))
    history.append(tree_paths.flatten(jax.device_get(state.masks)))
    step_metrics.append(jax.device_get(metrics_s))
  return exp, compiled, history, step_metrics


def test_compiles_once_per_plan_mdgf_once_sdgf_once_per_frame():
  for recipe, expected_plans in (('mdgf_exponential', 1), ('sdgf_stepwise', 3)):
    exp, compiled, _, _ = _run_steps(load_config('digits', f'recipe={recipe},steps=12,finetune=0'), 12)
    assert len({exp.recipe.plan(s) for s in range(12)}) == expected_plans
    compilations = sum(f._cache_size() for f in compiled.cache.values())  # pylint: disable=protected-access
    assert compilations == expected_plans, recipe


def test_a_sparse_train_step_writes_its_new_masks_without_copying_masks():
  # The state is donated but for its masks: with them donated too, XLA copied the old and the new mask of
  # every sparse kernel (the step reads the old ones after computing the new ones).
  exp, data = build_experiment(load_config('digits', 'recipe=static,steps=4,finetune=0'))
  compiled = steps_lib.CompiledSteps(exp)
  plan, state = exp.recipe.plan(0), exp.initial_state()
  new_state, _ = compiled.train_step(plan)(state, exp.shard(data.train_batch(0)))
  assert plan.sparse and exp.recipe.sparse_paths
  jitted = compiled.cache[('train_step', plan)]
  hlo = jitted.lower(new_state.replace(masks=None), new_state.masks, exp.shard(data.train_batch(1))).compile().as_text()
  assert ' pred[' in hlo and not re.search(r'= pred\[[\d,]*\]\S* copy\(', hlo)


def test_runs_share_compiled_steps_only_within_the_block_and_only_for_the_same_experiment():
  compiled = lambda arg: steps_lib.CompiledSteps(build_experiment(load_config('digits', arg))[0])
  with runs_share_compiled_steps():
    first, again, other = compiled('steps=10'), compiled('steps=10'), compiled('steps=12')
  assert first.cache is again.cache and first.cache is not other.cache
  assert compiled('steps=10').cache is not first.cache


def test_mask_update_every_refreshes_on_schedule_and_at_frame_starts():
  config = load_config('digits', 'recipe=sdgf_stepwise,steps=24,finetune=0')
  config.sparsity.mask_update_every = 5
  config.optimizer.update(learning_rate=0.05, warmup_steps=0)  # weights move enough to reorder every few steps
  exp, _, history, _ = _run_steps(config, 24)
  # Frames of 8 steps (3:4, 2:4, 1:4): refreshes at t % 5 == 0 and at frame starts 8 and 16.
  refresh = {0, 5, 8, 10, 15, 16, 20}
  for s in range(1, 24):
    changed = any((history[s][p] != history[s - 1][p]).any() for p in history[s])
    assert changed == (s in refresh), s  # masks change at every refresh, and only there
  for s in (8, 16):  # a new pattern always means new masks
    n, m = exp.recipe.plan(s).pattern('ff')
    for p, mask in history[s].items():
      assert (np.asarray(nm.group_counts(mask, m)) == n).all()


def test_step_flip_rate_is_the_fraction_of_mask_entries_that_changed():
  config = load_config('digits', 'recipe=mdgf_exponential,steps=12,finetune=0')
  config.optimizer.learning_rate = 0.05  # large steps, so that masks change from one step to the next
  exp, _, history, step_metrics = _run_steps(config, 12)
  paths = exp.recipe.sparse_paths
  rates = [sum(int((history[s][p] != history[s - 1][p]).sum()) for p in paths) / sum(history[s][p].size for p in paths)
           for s in range(1, 12)]
  assert max(rates) > 0
  np.testing.assert_allclose([step_metrics[s]['mask_flip_rate_step'] for s in range(1, 12)], rates, rtol=1e-6)


def test_grad_norm_is_the_norm_of_the_flowed_gradient_the_optimizer_clips():
  # SR-STE with a large lambda: the flowed gradient g + lambda (1 - m) W is far from the raw one
  config = load_config('digits', 'recipe=srste,flow=ste,steps=100,finetune=0')
  config.sparsity.srste_lambda = 1.0
  exp, data = build_experiment(config)
  plan = exp.recipe.plan(60)
  state = exp.initial_state()
  batch = exp.shard(data.train_batch(0))
  gradients = jax.jit(functools.partial(steps_lib._gradients, exp, plan))  # pylint: disable=protected-access
  _, _, grads, masks, _ = gradients(state, batch)
  params = jax.device_get(state.params)
  flowed = jax.tree.map(lambda g, m, w: g if m is None else g + np.where(m, 0, w), grads, masks, params,
                        is_leaf=lambda x: x is None)
  norm = lambda tree: np.sqrt(sum(np.sum(np.square(np.asarray(g, np.float64))) for g in jax.tree.leaves(tree)))
  assert norm(flowed) > 2 * norm(grads)
  _, step_metrics = jax.jit(functools.partial(steps_lib.train_step, exp, plan))(state, batch)
  np.testing.assert_allclose(float(step_metrics['grad_norm']), norm(flowed), rtol=1e-5)


OFFLINE_RUN = r'''
import sys
sys.path.insert(0, sys.argv[1])
from helpers import load_config
from pgf_sparsity.training import train
config = load_config('digits', 'steps=10')
config.log_every_steps = config.eval_every_steps = 5
train.train_and_evaluate(config, sys.argv[2])
print(sorted(m for m in ('tensorflow', 'tensorflow_datasets') if m in sys.modules))
'''


def test_tensorboard_gets_every_logged_scalar_and_offline_data_needs_no_tensorflow(tmp_path):
  """The event file holds each metrics.jsonl value under split/name at its step, as TensorBoard reads it; the
  run, on in-memory data, never imported TensorFlow (seconds of start-up that such runs need not pay)."""
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  done = subprocess.run([sys.executable, '-c', OFFLINE_RUN, os.path.dirname(__file__), str(tmp_path)], cwd=ROOT,
                        capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout.strip().splitlines()[-1] == '[]'
  events, = tmp_path.glob('events.out.tfevents.*')
  accumulator = event_accumulator.EventAccumulator(str(events))
  accumulator.Reload()
  records = metric_writers.read_jsonl(str(tmp_path))
  expected = {(f"{r['split']}/{k}", r['step']): v for r in records for k, v in r.items() if k not in ('step', 'split')}
  assert {'train/loss', 'eval/accuracy'} <= set(accumulator.Tags()['scalars'])
  written = {(tag, e.step): e.value for tag in accumulator.Tags()['scalars'] for e in accumulator.Scalars(tag)}
  assert written.keys() == expected.keys()
  for key, value in expected.items():
    assert written[key] == pytest.approx(value, rel=1e-6), key
