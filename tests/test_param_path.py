"""The model-agnostic path: masks and beta applied to the parameter pytree before the model's own apply
(`BoundRecipe.apply`) compute what the sparse layers compute, for any pytree and either kernel layout."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import build_experiment, load_config
from pgf_sparsity.sparsity import Recipe, tree_paths


@pytest.mark.parametrize('arg', ['recipe=mdgf_exponential,ff=1:4,qkv=1:4', 'recipe=srste,flow=ste,ff=1:4',
                                 'recipe=sdgf_stepwise,ff=1:4'])
def test_the_param_path_equals_the_layer_path_on_the_package_models(arg):
  """Same logits and the same gradients, bit for bit, at a sparse step of each kind."""
  exp, data = build_experiment(load_config('digits', arg))
  params = jax.jit(exp.init_state)(jax.random.PRNGKey(0)).params  # one program, not one per operation
  batch = data.train_batch(0)
  sp = exp.recipe
  step = sp.phases.sparse_start + sp.phases.sparse_steps // 3
  plan = sp.plan(step)
  masks, beta = sp.masks(params, plan), sp.beta(step, plan) + 0.25  # beta away from 0: pruned entries count
  layer_loss = lambda p: jnp.sum(exp.model.apply({'params': p, 'sparsity': sp.collection(masks, beta)},
                                                 batch['image'], train=False) ** 2)
  param_loss = lambda p: jnp.sum(exp.model.apply({'params': sp.apply(p, masks, beta)}, batch['image'],
                                                 train=False) ** 2)
  (a, grads_a), (b, grads_b) = (jax.jit(jax.value_and_grad(f))(params) for f in (layer_loss, param_loss))
  assert a == b
  for path, g in tree_paths.flatten(grads_a).items():
    np.testing.assert_array_equal(g, tree_paths.flatten(grads_b)[path], err_msg=path)


def test_apply_is_straight_through_and_leaves_dense_leaves_alone():
  params = {'block': {'w': jnp.arange(32.0).reshape(8, 4) - 16.0, 'b': jnp.ones(4)}}
  sp = Recipe.from_config({'recipe': 'mdgf_linear', 'alpha': 0.1,
                           'targets': {'ff': {'regex': 'block/w', 'n': 1, 'm': 4}}}).bind(params, 10)
  plan = sp.plan(3)
  masks = sp.masks(params, plan)
  out = sp.apply(params, masks, 0.5)
  w, m = params['block']['w'], masks['block']['w']
  np.testing.assert_array_equal(out['block']['w'], jnp.where(m, w, 0.5 * w))
  assert out['block']['b'] is params['block']['b']
  grads = jax.grad(lambda p: jnp.sum(sp.apply(p, masks, 0.5)['block']['w'] * 3.0))(params)
  np.testing.assert_array_equal(grads['block']['w'], jnp.full((8, 4), 3.0))  # every entry, pruned ones too
  assert sp.apply(params, None, 1.0) is params


def test_out_in_layout_groups_along_the_trailing_input_axis():
  """An Equinox/PyTorch weight (out, in) gets the transposed masks of the Flax kernel (in, out)."""
  kernel = jax.random.normal(jax.random.PRNGKey(0), (16, 6))
  target = {'regex': 'w', 'n': 1, 'm': 8}
  flax_sp = Recipe.from_config({'recipe': 'static', 'targets': {'t': target}}).bind({'w': kernel}, 10)
  torch_sp = Recipe.from_config({'recipe': 'static', 'targets': {'t': dict(target, layout='out_in')}}).bind(
      {'w': kernel.T}, 10)
  plan = flax_sp.plan(0)
  np.testing.assert_array_equal(flax_sp.masks({'w': kernel}, plan)['w'].T,
                                torch_sp.masks({'w': kernel.T}, plan)['w'])
  assert (torch_sp.masks({'w': kernel.T}, plan)['w'].reshape(6, 2, 8).sum(-1) == 1).all()
  with pytest.raises(ValueError, match='layout'):
    Recipe.from_config({'recipe': 'static', 'targets': {'t': dict(target, layout='rows')}})
  with pytest.raises(ValueError, match='only weight matrices'):
    Recipe.from_config({'recipe': 'static', 'targets': {'t': target}}).bind({'w': jnp.ones(16)}, 10)
