"""The gradient reaching W through a sparse layer plus the optax transform, recipe by recipe."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from pgf_sparsity import nm_gradient_flow
from pgf_sparsity import SparseDense
from pgf_sparsity.sparsity import Recipe, tree_paths

LAMBDA = 2e-4


class TwoLayer(nn.Module):

  @nn.compact
  def __call__(self, x):
    return nn.Dense(3, name='head')(SparseDense(4, name='fc')(x))


def setup(recipe, flow, step=5):
  cfg = {'recipe': recipe, 'flow': flow, 'targets': {'fc': {'regex': 'fc/kernel', 'n': 1, 'm': 4}},
         'alpha': 0.1, 'srste_lambda': LAMBDA}
  model = TwoLayer()
  x = jax.random.normal(jax.random.PRNGKey(0), (5, 32))
  c = jax.random.normal(jax.random.PRNGKey(1), (5, 3))
  params = model.init(jax.random.PRNGKey(2), x)['params']
  sp = Recipe.from_config(cfg).bind(params, total_steps=100)
  sp.check_layers(model.apply, params, x)
  return sp, model, x, c, params


def loss_fn(model, params, collection, x, c):
  return jnp.sum(model.apply({'params': params, 'sparsity': collection}, x) * c)


def flowed_gradient(sp, model, x, c, params, step):
  plan = sp.plan(step)
  masks = sp.masks(params, plan)
  beta = sp.beta(step, plan)
  grads = jax.grad(loss_fn, argnums=1)(model, params, sp.collection(masks, beta), x, c)
  tx = sp.transform()
  out, _ = tx.update(grads, tx.init(params), params, nm_masks=masks, nm_beta=beta)
  assert masks['head'] == {'kernel': None, 'bias': None}  # params-shaped, None where dense
  return out, grads, masks['fc']['kernel'], float(beta)


def hand_gradient(params, x, c):
  """dL/dW~ of L = sum(head(x W~ + b) * c): x^T (c V^T) with V the head kernel."""
  return x.T @ (c @ params['head']['kernel'].T)


CASES = [
    # recipe, flow, expected gradient to W as a function of (g, m, beta, W)
    ('static', 'decayed', lambda g, m, b, w: g * m),
    ('static', 'ste', lambda g, m, b, w: g),
    ('srste', 'ste', lambda g, m, b, w: g + LAMBDA * (1 - m) * w),
    ('mdgf_linear', 'decayed', lambda g, m, b, w: g * (m + (1 - m) * b)),
    ('mdgf_linear', 'ste', lambda g, m, b, w: g),
    ('mdgf_exponential', 'decayed', lambda g, m, b, w: g * (m + (1 - m) * b)),
    ('mdgf_exponential', 'ste', lambda g, m, b, w: g),
    ('sdgf_stepwise', 'decayed', lambda g, m, b, w: g * m),
    ('sdgf_stepwise', 'ste', lambda g, m, b, w: g),
    ('dense', 'decayed', lambda g, m, b, w: g),
]


@pytest.mark.parametrize('recipe,flow,formula', CASES)
def test_gradient_matches_hand_derived_formula(recipe, flow, formula):
  sp, model, x, c, params = setup(recipe, flow)
  out, _, mask, beta = flowed_gradient(sp, model, x, c, params, step=5)
  w = params['fc']['kernel']
  if recipe == 'dense':
    mask = jnp.ones_like(w)
  else:
    assert sp.plan(5).phase == 'sparse'
  expected = formula(hand_gradient(params, x, c), mask.astype(jnp.float32), beta, w)
  np.testing.assert_allclose(out['fc']['kernel'], expected, rtol=1e-5, atol=1e-7)
  if recipe.startswith('mdgf'):
    assert 0.0 < beta < 1.0
  # Every other leaf is untouched, bit for bit.
  grads = jax.grad(loss_fn, argnums=1)(model, params, sp.collection(sp.masks(params, sp.plan(5)),
                                                                    sp.beta(5, sp.plan(5))), x, c)
  for leaf in ('head',):
    for k in ('kernel', 'bias'):
      np.testing.assert_array_equal(out[leaf][k], grads[leaf][k])
  np.testing.assert_array_equal(out['fc']['bias'], grads['fc']['bias'])


def test_geometric_gradient():
  cfg = {'recipe': 'sdgf_geometric', 'flow': 'decayed',
         'targets': {'fc': {'regex': 'fc/kernel', 'n': 1, 'm': 4}}}
  model = TwoLayer()
  x = jax.random.normal(jax.random.PRNGKey(0), (5, 32))
  c = jax.random.normal(jax.random.PRNGKey(1), (5, 3))
  params = model.init(jax.random.PRNGKey(2), x)['params']
  sp = Recipe.from_config(cfg).bind(params, total_steps=100)
  assert sp.plan(0).pattern('fc') == (8, 32)
  out, _, mask, _ = flowed_gradient(sp, model, x, c, params, step=0)
  assert int(mask.sum()) == 8 * 4
  np.testing.assert_allclose(out['fc']['kernel'], hand_gradient(params, x, c) * mask, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize('recipe', ['static', 'mdgf_linear', 'mdgf_exponential', 'sdgf_stepwise',
                                    'sdgf_geometric'])
def test_decayed_equals_plain_autodiff_and_finite_differences(recipe):
  sp, model, x, c, params = setup(recipe, 'decayed')
  beta = sp.beta(5, sp.plan(5))
  out, _, mask, b = flowed_gradient(sp, model, x, c, params, step=5)

  def plain_loss(w):  # no straight-through: autodiff of W * (m + (1 - m) beta) itself
    mixed = w * jnp.where(mask, 1.0, beta)
    h = x @ mixed + params['fc']['bias']
    return jnp.sum((h @ params['head']['kernel'] + params['head']['bias']) * c)

  w = params['fc']['kernel']
  np.testing.assert_allclose(out['fc']['kernel'], jax.grad(plain_loss)(w), rtol=1e-5, atol=1e-7)
  # Central finite differences with the mask held fixed (float64 on the host).
  w64 = np.asarray(w, np.float64)
  mix = np.where(np.asarray(mask), 1.0, float(beta))
  x64, c64 = np.asarray(x, np.float64), np.asarray(c, np.float64)
  v64 = np.asarray(params['head']['kernel'], np.float64)
  f = lambda ww: np.sum((x64 @ (ww * mix)) @ v64 * c64)
  eps = 1e-6
  for i, j in [(0, 0), (3, 1), (5, 2), (7, 3)]:
    e = np.zeros_like(w64)
    e[i, j] = eps
    fd = (f(w64 + e) - f(w64 - e)) / (2 * eps)
    assert float(out['fc']['kernel'][i, j]) == pytest.approx(fd, rel=1e-4, abs=1e-5)


def test_forward_uses_exactly_n_m_weights_at_beta_zero():
  sp, model, x, c, params = setup('static', 'decayed')
  plan = sp.plan(5)
  masks = sp.masks(params, plan)
  y = model.apply({'params': params, 'sparsity': sp.collection(masks, sp.beta(5, plan))}, x)
  w = params['fc']['kernel'] * masks['fc']['kernel']
  expected = (x @ w + params['fc']['bias']) @ params['head']['kernel'] + params['head']['bias']
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


def test_chains_before_clipping_and_adamw():
  sp, model, x, c, params = setup('srste', 'ste')
  tx = optax.chain(sp.transform(), optax.clip_by_global_norm(1.0), optax.adamw(1e-3, weight_decay=0.01))
  state = tx.init(params)
  plan = sp.plan(0)
  masks = sp.masks(params, plan)
  grads = jax.grad(loss_fn, argnums=1)(model, params, sp.collection(masks, 0.0), x, c)
  updates, _ = jax.jit(lambda g, s, p, mk: tx.update(g, s, p, nm_masks=mk, nm_beta=0.0))(
      grads, state, params, masks)
  assert jax.tree.structure(updates) == jax.tree.structure(params)
  # Dense phase: no masks, gradients pass through untouched.
  same, _ = sp.transform().update(grads, (), params)
  np.testing.assert_array_equal(same['fc']['kernel'], grads['fc']['kernel'])


@pytest.mark.parametrize('recipe,flow', [('srste', 'ste'), ('mdgf_exponential', 'decayed')])
def test_the_flow_comes_before_a_clip_that_binds(recipe, flow):
  """flow -> clip -> SGD against the chain computed by hand; the clip threshold binds, so a clip placed
  before the flow (or a flow that skipped pruned weights' beta or SR-STE's term) gives other updates."""
  sp, model, x, c, params = setup(recipe, flow)
  plan = sp.plan(sp.phases.sparse_start + 2)
  masks, beta = sp.masks(params, plan), 0.3
  grads = jax.grad(loss_fn, argnums=1)(model, params, sp.collection(masks, beta), x, c)
  lr, threshold = 0.1, 1e-3
  tx = optax.chain(sp.transform(), optax.clip_by_global_norm(threshold), optax.sgd(lr))
  updates, _ = tx.update(grads, tx.init(params), params, nm_masks=masks, nm_beta=beta)
  flat_g, flat_m, flat_w = (tree_paths.flatten(t) for t in (grads, masks, params))
  flowed = {}
  for path, g in flat_g.items():
    g, m, w = np.asarray(g, np.float64), flat_m.get(path), np.asarray(flat_w[path], np.float64)
    if m is not None and flow == 'decayed':
      g = np.where(m, g, beta * g)
    if m is not None and recipe == 'srste':
      g = g + np.where(m, 0.0, sp.recipe.srste_lambda * w)
    flowed[path] = g
  norm = np.sqrt(sum(np.sum(g ** 2) for g in flowed.values()))
  assert norm > 10 * threshold  # the clip binds
  for path, u in tree_paths.flatten(updates).items():
    np.testing.assert_allclose(u, -lr * flowed[path] * threshold / norm, rtol=2e-5, atol=1e-9, err_msg=path)


def test_invalid_combinations_are_rejected_at_construction():
  with pytest.raises(ValueError, match='straight-through'):
    nm_gradient_flow('decayed', srste_lambda=1e-4)
  with pytest.raises(ValueError, match='gradient flow'):
    nm_gradient_flow('soft')
  with pytest.raises(ValueError, match='srste_lambda'):
    nm_gradient_flow('ste', srste_lambda=-1.0)


def test_is_an_optax_transformation_on_params_shaped_masks():
  tx = nm_gradient_flow('decayed')
  g = {'fc': {'kernel': jnp.full((4, 2), 2.0)}, 'head': {'kernel': jnp.ones((2, 2))}}
  mask = jnp.array([[True, False]] * 4)
  assert isinstance(tx.init(g), optax.EmptyState)
  out, _ = tx.update(g, tx.init(g), g, nm_masks={'fc': {'kernel': mask}, 'head': {'kernel': None}}, nm_beta=0.25)
  np.testing.assert_array_equal(out['fc']['kernel'], np.where(mask, 2.0, 0.5))
  np.testing.assert_array_equal(out['head']['kernel'], g['head']['kernel'])
  with pytest.raises(ValueError):  # masks that are not shaped like the parameters
    tx.update(g, tx.init(g), g, nm_masks={'fc': {'kernel': mask}}, nm_beta=0.0)
