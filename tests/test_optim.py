"""Optimizer and learning-rate schedule options: AdamW or Adafactor (T5X), cosine, rsqrt or constant."""
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from pgf_sparsity import config_lib
from pgf_sparsity import models
from pgf_sparsity.training import optim
from pgf_sparsity.training import train

sys.path.insert(0, os.path.dirname(__file__))
from helpers import load_config  # noqa: E402


def test_rsqrt_and_constant_schedules_follow_t5x():
  rsqrt = optim.learning_rate_schedule(config_lib.complete_block('optimizer', dict(
      learning_rate=0.01, schedule='rsqrt', warmup_steps=10_000)), 100_000, 1)
  assert float(rsqrt(0)) == pytest.approx(0.01) and float(rsqrt(10_000)) == pytest.approx(0.01)
  assert float(rsqrt(40_000)) == pytest.approx(0.005)  # 1 / sqrt(step), as T5X's rsqrt_decay with base 1.0
  constant = optim.learning_rate_schedule(
      config_lib.complete_block('optimizer', dict(learning_rate=1e-3, schedule='constant')), 100, 1)
  assert float(constant(0)) == float(constant(99)) == pytest.approx(1e-3)


def test_adafactor_is_optax_adafactor_after_the_gradient_flow():
  opt = config_lib.complete_block('optimizer', dict(name='adafactor', learning_rate=1e-2, schedule='constant',
                                                    grad_clip_norm=0.0))
  tx = optim.make_optimizer(opt, optax.identity(), optim.learning_rate_schedule(opt, 10, 1))
  params = {'w': jnp.ones((4, 3))}
  grads = {'w': jnp.arange(12.0).reshape(4, 3)}
  updates, _ = tx.update(grads, tx.init(params), params)
  expected, _ = optax.adafactor(1e-2).update(grads, optax.adafactor(1e-2).init(params), params)
  np.testing.assert_allclose(updates['w'], expected['w'], rtol=1e-6)


def test_scaled_attention_logits_equal_the_folded_query_scaling():
  """T5's query init folds 1/sqrt(head_dim); scaling the logits instead is the same function of rescaled
  query kernels (what T5X does under AdamW)."""
  config = {'name': 't5', 'variant': 'tiny', 'vocab_size': 64}
  scaled, folded = models.build(dict(config, scale_attention_logits=True), 64), models.build(config, 64)
  inputs = jnp.arange(1, 13, dtype=jnp.int32).reshape(2, 6) % 60 + 1
  params = scaled.init(jax.random.PRNGKey(0), inputs, inputs)
  head_dim = scaled.head_dim
  rescale = lambda path, x: x / np.sqrt(head_dim) if 'query' in jax.tree_util.keystr(path) else x
  folded_params = jax.tree_util.tree_map_with_path(rescale, params)
  np.testing.assert_allclose(scaled.apply(params, inputs, inputs), folded.apply(folded_params, inputs, inputs),
                             rtol=1e-4, atol=1e-4)
  assert not np.allclose(scaled.apply(params, inputs, inputs), folded.apply(params, inputs, inputs), atol=1e-3)


def test_t5_configs_pair_the_optimizer_with_the_attention_scaling():
  c4 = load_config('t5_c4')
  assert c4.optimizer.name == 'adafactor' and c4.optimizer.schedule == 'rsqrt'
  assert not c4.model.scale_attention_logits
  adamw = load_config('t5_c4', 'opt=adamw')
  assert adamw.optimizer.name == 'adamw' and adamw.model.scale_attention_logits
  assert load_config('t5_shakespeare').model.scale_attention_logits


@pytest.mark.parametrize('update,message', [
    (dict(name='sgd'), 'optimizer.name must be one of'),
    (dict(schedule='linear'), 'optimizer.schedule must be one of'),
    (dict(name='adafactor', schedule='constant'), "\\['weight_decay'\\] belong to AdamW"),  # set apart from its default
    (dict(name='adafactor', schedule='constant', b1=0.8, eps=1e-6),
     "\\['b1', 'eps', 'weight_decay'\\] belong to AdamW"),
    (dict(schedule='rsqrt'), "\\['min_learning_rate'\\] belong to the cosine schedule"),
    (dict(schedule='rsqrt', init_learning_rate=1e-7),
     "\\['init_learning_rate', 'min_learning_rate'\\] belong to the cosine"),
    (dict(warmup_steps=10_000), 'The warmup \\(10000 steps\\) must end before the cosine decay does'),
])
def test_optimizer_options_are_validated_before_training(update, message, tmp_path):
  config = load_config('digits')
  config.optimizer.update(update)
  with pytest.raises(ValueError, match=message):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()
