"""Training FLOPs against hand counts on a tiny ViT (docs/method.md, "Training FLOPs")."""
import pytest

from pgf_sparsity import models
from pgf_sparsity.analysis import flops
from pgf_sparsity.sparsity import Recipe

TINY = {'name': 'vit', 'num_classes': 3, 'width': 8, 'depth': 1, 'mlp_dim': 16, 'num_heads': 2, 'patch_size': 4,
        'pool': 'gap'}
IMAGE = (8, 8, 1)  # 4 patches of 4x4x1
# Forward FLOPs per example, by hand (2 P T per linear layer):
EMBED = 2 * (4 * 4 * 1 * 8) * 4       # 1024
QKVO = 4 * 2 * (8 * 8) * 4            # 2048
FF = 2 * (2 * (8 * 16) * 4)           # fc1 + fc2: 2048
HEAD = 2 * (8 * 3) * 1                # 48
ATTENTION = 4 * 4 * 4 * 8             # scores and values: 4 n^2 c = 512
DENSE_TRAIN = 3 * (EMBED + QKVO + FF + HEAD + ATTENTION)


def counter(recipe, flow='decayed', steps=100, **extra):
  recipe = Recipe.from_config({'recipe': recipe, 'flow': flow,
                                'targets': {'ff': {'regex': r'.*/mlp/fc[12]/kernel', 'n': 1, 'm': 4}}, **extra})
  model = models.build(TINY, 3)
  import jax
  import jax.numpy as jnp
  params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1,) + IMAGE)))['params']
  sp = recipe.bind(params, steps)
  return flops.TrainingFlops(model, IMAGE, sp, batch_size=2), sp


def test_layers_and_tokens_are_found():
  layers, attention = flops.count_layers(models.build(TINY, 3), IMAGE)
  by_path = {l.path: l for l in layers}
  assert by_path['Transformer/encoderblock_0/mlp/fc1'].weights == 128
  assert by_path['Transformer/encoderblock_0/mlp/fc1'].tokens == 4
  assert by_path['embedding'].tokens == 4 and by_path['head'].tokens == 1
  assert attention == ATTENTION
  assert len(layers) == 8


def test_dense_and_binary_recipes_match_hand_counts():
  dense, sp = counter('dense')
  assert dense.per_step(sp.plan(0), False) == 2 * DENSE_TRAIN
  static, sp = counter('static', 'decayed')
  # FF: forward and input gradient at N/M = 1/4; weight gradient 1/4 under 'decayed', 1 under 'ste'.
  assert static.per_step(sp.plan(0), False) == 2 * (DENSE_TRAIN - 3 * FF + FF * (0.25 + 0.25 + 0.25))
  srste, sp = counter('srste', 'ste')
  assert srste.per_step(sp.plan(0), False) == 2 * (DENSE_TRAIN - 3 * FF + FF * (0.25 + 0.25 + 1.0))


def test_mdgf_costs_dense_while_beta_is_positive_and_cumulative_is_a_pure_function_of_the_step():
  linear, sp = counter('mdgf_linear', 'decayed', steps=100, alpha=0.1, dense_steps=20, finetune_steps=30)
  dense_step = 2 * DENSE_TRAIN
  sparse_step = 2 * (DENSE_TRAIN - 3 * FF + FF * 0.75)
  # dense [0, 20), beta > 0 for sparse clock 0..9 -> steps [20, 30), then beta = 0 until 70, fine-tune 70..100.
  assert linear.cumulative(20) == 20 * dense_step
  assert linear.cumulative(30) == 30 * dense_step
  assert linear.cumulative(100) == pytest.approx(30 * dense_step + 70 * sparse_step)
  assert linear.cumulative(55) == pytest.approx(30 * dense_step + 25 * sparse_step)
  exponential, _ = counter('mdgf_exponential', 'decayed', steps=100, alpha=0.1, finetune_steps=30)
  assert exponential.cumulative(100) == pytest.approx(70 * dense_step + 30 * sparse_step)
  assert exponential.dense_cumulative(100) == 100 * dense_step


def test_sdgf_frames_cost_their_own_density():
  stepwise, sp = counter('sdgf_stepwise', 'decayed', steps=30)  # frames 3:4, 2:4, 1:4 of 10 steps
  step = lambda d: 2 * (DENSE_TRAIN - 3 * FF + FF * 3 * d)
  assert stepwise.cumulative(30) == pytest.approx(10 * (step(0.75) + step(0.5) + step(0.25)))
