"""Each recipe trains a tiny sparse MLP on sklearn digits for 200 steps; the final kernels are exactly 1:4."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from pgf_sparsity import SparseDense
from pgf_sparsity.analysis import diagnostics
from pgf_sparsity.sparsity import nm
from pgf_sparsity.sparsity import Recipe
from pgf_sparsity.sparsity import tree_paths

STEPS = 200
RECIPES = {
    'dense': {},
    'static': {'flow': 'decayed'},
    'srste': {'flow': 'ste'},
    'mdgf_linear': {'alpha': 1 / 120},
    'mdgf_exponential': {'alpha': 0.03},
    'sdgf_stepwise': {},
    'sdgf_geometric': {},
}


class MLP(nn.Module):

  @nn.compact
  def __call__(self, x):
    x = nn.relu(SparseDense(128, name='hidden_0')(x))
    x = nn.relu(SparseDense(64, name='hidden_1')(x))
    return nn.Dense(10, name='head')(x)


def digits():
  # imported here, not by the file, which every pytest worker collects: only this file needs sklearn (and scipy)
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  data = load_digits()
  x = (data.images.reshape(-1, 64) / 16.0).astype(np.float32)
  y = data.target.astype(np.int32)
  perm = np.random.RandomState(0).permutation(len(x))
  x, y = x[perm], y[perm]
  return (x[:1400], y[:1400]), (x[1400:], y[1400:])


def train(recipe, extra):
  (xtr, ytr), (xte, yte) = digits()
  cfg = {'recipe': recipe, 'targets': {'hidden': {'regex': r'hidden_\d/kernel', 'n': 1, 'm': 4}},
         'dense_fraction': 0.1, 'finetune_fraction': 0.1, **extra}
  model = MLP()
  params = model.init(jax.random.PRNGKey(0), xtr[:1])['params']
  sp = Recipe.from_config(cfg).bind(params, STEPS)
  sp.check_layers(model.apply, params, xtr[:1])
  tx = optax.chain(sp.transform(), optax.clip_by_global_norm(1.0), optax.adamw(3e-3, weight_decay=1e-4))
  opt_state = tx.init(params)

  @functools.partial(jax.jit, static_argnums=0)
  def step_fn(plan, params, opt_state, step, x, y):
    masks = sp.masks(params, plan) if plan.sparse else None
    beta = sp.beta(step, plan)
    variables = {'sparsity': sp.collection(masks, beta)} if masks is not None else {}

    def loss_fn(p):
      logits = model.apply({'params': p, **variables}, x)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    grads = jax.grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params, nm_masks=masks, nm_beta=beta)
    return optax.apply_updates(params, updates), opt_state

  rng = np.random.RandomState(1)
  for step in range(STEPS):
    idx = rng.randint(0, len(xtr), 64)
    params, opt_state = step_fn(sp.plan(step), params, opt_state, jnp.asarray(step), xtr[idx], ytr[idx])

  final_plan = sp.plan(STEPS - 1)
  masks = sp.masks(params, final_plan) if final_plan.sparse else None
  variables = {'params': params}
  if masks is not None:
    variables['sparsity'] = sp.collection(masks, 0.0)
  accuracy = float((model.apply(variables, xte).argmax(-1) == yte).mean())
  return accuracy, params, masks, sp, (model, variables, xte)


@pytest.mark.parametrize('recipe', sorted(RECIPES))
def test_recipe_trains_well_above_chance_and_ends_exactly_n_m(recipe):
  accuracy, params, masks, sp, (model, evaluated, x) = train(recipe, RECIPES[recipe])
  assert accuracy > 0.75, f'{recipe}: accuracy {accuracy:.3f} (chance is 0.1)'
  if recipe == 'dense':
    assert masks is None
    return
  assert sorted(tree_paths.flatten(masks)) == ['hidden_0/kernel', 'hidden_1/kernel']
  hardened = jax.tree.map(lambda w: w, params)
  for path, mask in tree_paths.flatten(masks).items():
    hardened[path.split('/')[0]]['kernel'] = params[path.split('/')[0]]['kernel'] * mask
    counts = np.asarray(nm.group_counts(hardened[path.split('/')[0]]['kernel'] != 0, 4, 0))
    assert (counts == 1).all(), path
  # the evaluated model computes with exactly these 1:4 weights: a plain forward pass on them (no sparsity
  # collection, zeros where pruned) gives its logits
  np.testing.assert_allclose(np.asarray(model.apply({'params': hardened}, x)),
                             np.asarray(model.apply(evaluated, x)), rtol=1e-5, atol=1e-5)
  summary, _ = diagnostics.nm_summary(sp, params, masks, sp.plan(STEPS - 1))
  assert summary['sparsity'] == pytest.approx(0.75)
  assert summary['nm_exact'] == 1.0
