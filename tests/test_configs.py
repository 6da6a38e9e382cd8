"""Every config builds its model, trains a step and evaluates with `runlocal` (the tfds configs, ImageNet,
C4, GLUE and WMT, on tfds mock data)."""
import contextlib
import glob
import os
import sys

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from pgf_sparsity.training import metric_writers
from pgf_sparsity.training import train

sys.path.insert(0, os.path.dirname(__file__))
from helpers import ROOT, load_config, mock_tfds  # noqa: E402

CONFIGS = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, 'configs', '*.py')))
ON_TFDS = {'vit_i1k', 'swinv2_i1k', 't5_c4', 't5_glue', 'wmt_ende'}


def test_every_config_is_covered():
  assert set(CONFIGS) >= ON_TFDS | {'digits', 'fashion_mnist', 't5_shakespeare'}


@pytest.mark.parametrize('name', CONFIGS)
def test_every_config_runs_a_step_with_runlocal(name, tmp_path):
  config = load_config(name, 'runlocal')
  mock = (mock_tfds(num_examples=24, policy=tfds.testing.MockPolicy.USE_CODE) if name in ON_TFDS
          else contextlib.nullcontext())
  with mock:
    state, results = train.train_and_evaluate(config, str(tmp_path), max_steps_this_run=1)
  assert int(state.step) == 1
  assert np.isfinite(results['eval']['loss']), results
  generated = {'t5_glue': ('exact_match', 1.0), 'wmt_ende': ('bleu', 100.0)}.get(name)
  if generated:  # evaluated by decoding: the task's metric of the decoded text
    assert 0.0 <= results['eval'][generated[0]] <= generated[1], results
  assert (tmp_path / 'run_info.json').exists() and (tmp_path / 'checkpoints' / '1').exists()


@pytest.mark.parametrize('name', CONFIGS)
def test_runlocal_is_short(name):
  config = load_config(name, 'runlocal')
  steps = config.total_steps if config.total_steps is not None else None
  assert steps is None or steps <= 30
  assert config.eval_every_steps <= 30 and config.log_every_steps <= 10


@pytest.mark.usefixtures('shared_compiled_steps')
@pytest.mark.parametrize('name', ['t5_c4', 't5_glue'])
def test_a_text_run_on_tfds_stopped_and_resumed_is_bit_identical_step_by_step(name, tmp_path):
  """C4's span corruption of packed documents and GLUE's text-to-text pairs, through the training loop: a
  run stopped at step 2 and resumed (a new tfds pipeline, from its step) logs the same loss and gradient norm
  at every step as an uninterrupted run and ends with the same parameters, bit for bit."""
  config = load_config(name, 'runlocal')
  config.total_steps, config.checkpoint_every_steps, config.log_every_steps, config.eval_every_steps = 4, 2, 1, 4
  if 'num_epochs' in config:
    config.num_epochs = None
  with mock_tfds(num_examples=24, policy=tfds.testing.MockPolicy.USE_CODE):
    full, _ = train.train_and_evaluate(config, str(tmp_path / 'full'))
    train.train_and_evaluate(config, str(tmp_path / 'split'), max_steps_this_run=2)
    resumed, _ = train.train_and_evaluate(config, str(tmp_path / 'split'))
  assert int(resumed.step) == 4
  per_step = lambda run: [(r['step'], r['loss'], r['grad_norm']) for r in
                          metric_writers.read_jsonl(str(tmp_path / run)) if r['split'] == 'train']
  assert [s for s, _, _ in per_step('split')] == [1, 2, 3, 4]
  assert per_step('split') == per_step('full')
  for a, b in zip(jax.tree.leaves(full.params), jax.tree.leaves(resumed.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
