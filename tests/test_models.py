import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgf_sparsity import models
from pgf_sparsity.sparsity import layers
from pgf_sparsity.sparsity import Recipe
from pgf_sparsity.sparsity import tree_paths


def count_params(config, size):
  model = models.build(config, 3)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3))))
  return sum(x.size for x in jax.tree.leaves(shapes['params']))


def test_vit_b16_parameter_count_matches_published():
  # ViT-B/16, 1000 classes, class token: 86.6M (86,567,656) as in the ViT paper and timm.
  assert count_params({'name': 'vit', 'variant': 'B/16', 'num_classes': 1000}, 224) == 86_567_656


def test_swinv2_t_parameter_count_matches_published():
  # SwinV2-T, window 8, 256 px: 28.3M (timm swinv2_tiny_window8_256: 28,347,154).
  assert count_params({'name': 'swinv2', 'variant': 'T/8', 'num_classes': 1000}, 256) == 28_347_154


def jitted_apply(model):
  """model.apply compiled as one program: the forward pass op by op compiles each operation on its own."""
  return jax.jit(model.apply, static_argnames=('train', 'method', 'mutable', 'capture_intermediates'))


TINY_VIT = {'name': 'vit', 'num_classes': 5, 'width': 16, 'depth': 2, 'mlp_dim': 32, 'num_heads': 2,
            'patch_size': 4}
TINY_SWIN = {'name': 'swinv2', 'num_classes': 5, 'embed_dim': 16, 'depths': (2, 2), 'num_heads': (2, 4),
             'window_size': 4, 'patch_size': 2}


@pytest.mark.parametrize('config,size', [(TINY_VIT, 16), (dict(TINY_VIT, pool='gap'), 16), (TINY_SWIN, 16)])
def test_output_shapes_and_dropout_paths(config, size):
  model = models.build(dict(config, dropout=0.1, stochastic_depth=0.1), 3)
  x = jnp.ones((3, size, size, 3))
  params = jax.jit(model.init)(jax.random.PRNGKey(0), x)['params']
  apply = jitted_apply(model)
  assert apply({'params': params}, x).shape == (3, 5)
  train_out = apply({'params': params}, x, train=True, rngs={'dropout': jax.random.PRNGKey(1)})
  assert train_out.shape == (3, 5) and np.isfinite(np.asarray(train_out)).all()


FF = r'.*/mlp/fc[12]/kernel'
QKV = r'.*/attention/(query|key|value)/kernel'
OUT = r'.*/attention/out/kernel'


@pytest.mark.parametrize('config,size', [(TINY_VIT, 16), (TINY_SWIN, 16)])
@pytest.mark.parametrize('targets', [{'ff': FF}, {'qkv': QKV}, {'ff': FF, 'qkv': QKV, 'out': OUT}])
def test_sparse_layers_exactly_where_configured(config, size, targets):
  model = models.build(config, 3)
  x = jnp.ones((2, size, size, 3))
  params = jax.jit(model.init)(jax.random.PRNGKey(0), x)['params']
  sp = Recipe.from_config({'recipe': 'static',
                           'targets': {k: {'regex': r, 'n': 1, 'm': 4} for k, r in targets.items()}}).bind(params, 10)
  bound = sp.kernels
  sp.check_layers(model.apply, params, x)
  import re
  expected = {p for p in tree_paths.flatten(params) if any(re.fullmatch(r, p) for r in targets.values())}
  assert set(bound) == expected and expected
  plan = sp.plan(0)
  masks = sp.masks(params, plan)
  _, state = jitted_apply(model)({'params': params, 'sparsity': sp.collection(masks, 0.0)}, x,
                                 mutable=(layers.SPARSE_LAYERS,))
  applied = {p.split('/mask_applied')[0] for p in tree_paths.flatten(state[layers.SPARSE_LAYERS])}
  assert applied == {p.rsplit('/', 1)[0] for p in expected}
  # Everything else stays dense: embeddings, norms, head, position bias MLPs.
  for p in tree_paths.flatten(params):
    if p not in expected:
      assert not any(p.startswith(a + '/') and p.endswith('kernel') for a in applied)


def test_sparse_forward_differs_from_dense_and_matches_hardened_weights():
  model = models.build(TINY_VIT, 3)
  x = jax.random.normal(jax.random.PRNGKey(3), (2, 16, 16, 3))
  params = jax.jit(model.init)(jax.random.PRNGKey(0), x)['params']
  params = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(jax.random.PRNGKey(4), p.shape), params)
  sp = Recipe.from_config({'recipe': 'static', 'targets': {'ff': {'regex': FF, 'n': 1, 'm': 4}}}).bind(params, 10)
  masks = sp.masks(params, sp.plan(0))
  apply = jitted_apply(model)
  sparse = apply({'params': params, 'sparsity': sp.collection(masks, 0.0)}, x)
  hardened = jax.tree.map(lambda m, v: v if m is None else v * m, masks, params, is_leaf=lambda m: m is None)
  np.testing.assert_allclose(sparse, apply({'params': hardened}, x), rtol=1e-5, atol=1e-6)
  assert not np.allclose(sparse, apply({'params': params}, x))


def test_config_errors_name_the_key():
  with pytest.raises(ValueError, match='Unknown model keys.*widht'):
    models.build(dict(TINY_VIT, widht=3), 3)
  with pytest.raises(ValueError, match='Unknown ViT variant'):
    models.build({'name': 'vit', 'variant': 'X/16'}, 3)
  with pytest.raises(ValueError, match='Unknown model.name'):
    models.build({'name': 'resnet'}, 3)
  with pytest.raises(ValueError, match='set .*width'):
    models.build({'name': 'vit'}, 3)
  assert models.vit.decode_variant('S/32')['patch_size'] == 32
  assert models.swinv2.decode_variant('B/16') == {'embed_dim': 128, 'depths': (2, 2, 18, 2),
                                                  'num_heads': (4, 8, 16, 32), 'window_size': 16}


def test_non_sparse_capable_target_is_rejected():
  model = models.build(TINY_VIT, 3)
  x = jnp.ones((1, 16, 16, 3))
  params = jax.jit(model.init)(jax.random.PRNGKey(0), x)['params']
  sp = Recipe.from_config({'recipe': 'static', 'targets': {'head': {'regex': 'head/kernel', 'n': 1, 'm': 4}}}).bind(
      params, 10)
  with pytest.raises(ValueError, match='not sparse-capable'):
    sp.check_layers(model.apply, params, x)


def test_exact_gelu_option_is_the_erf_form():
  from pgf_sparsity.models import common  # pylint: disable=g-import-not-at-top
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 8))
  exact, tanh = common.MlpBlock(16, exact_gelu=True), common.MlpBlock(16)
  params = exact.init(jax.random.PRNGKey(1), x, True)
  p = params['params']
  h = np.asarray(x, np.float64) @ np.asarray(p['fc1']['kernel'], np.float64) + np.asarray(p['fc1']['bias'])
  from scipy.special import erf  # pylint: disable=g-import-not-at-top
  h = 0.5 * h * (1.0 + erf(h / np.sqrt(2.0)))
  expected = h @ np.asarray(p['fc2']['kernel'], np.float64) + np.asarray(p['fc2']['bias'])
  np.testing.assert_allclose(exact.apply(params, x, True), expected, rtol=1e-5, atol=1e-6)
  assert np.abs(np.asarray(tanh.apply(params, x, True)) - expected).max() > 1e-6  # the tanh form differs
  assert models.build(dict(TINY_VIT, exact_gelu=True), 3).exact_gelu


@pytest.mark.parametrize('eps', [1e-5, 1e-6])
def test_swinv2_layer_norm_epsilon_option(eps):
  model = models.build(dict(TINY_SWIN, norm_eps=eps), 3)
  x = 1e-3 * jax.random.normal(jax.random.PRNGKey(0), (1, 16, 16, 3))  # tiny variance: epsilon matters
  params = jax.jit(model.init)(jax.random.PRNGKey(1), x)
  _, state = jitted_apply(model)(params, x, capture_intermediates=True, mutable=('intermediates',))
  embedded = np.asarray(state['intermediates']['patch_embed']['__call__'][0], np.float64)
  normed = np.asarray(state['intermediates']['patch_norm']['__call__'][0], np.float64)
  centred = embedded - embedded.mean(-1, keepdims=True)
  for candidate in (1e-5, 1e-6):
    by_hand = centred / np.sqrt((centred ** 2).mean(-1, keepdims=True) + candidate)
    assert np.allclose(normed, by_hand, rtol=1e-4, atol=1e-5) == (candidate == eps), candidate


def test_t5_dropout_is_shared_along_the_sequence():
  """T5X's dropout masks are per example and feature, the same at every position: with one token repeated
  and no position bias, every position's output stays identical under dropout."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from pgf_sparsity.models import t5  # pylint: disable=g-import-not-at-top
  model = t5.T5(vocab_size=16, d_model=16, d_ff=32, num_heads=2, head_dim=8, encoder_layers=2, decoder_layers=1,
                dropout=0.3)
  tokens = jnp.full((2, 7), 5, jnp.int32)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), tokens, tokens[:, :3])['params']
  params = dict(params, encoder_position_bias={'rel_embedding': jnp.zeros((2, 32))})
  apply = jitted_apply(model)
  encoded, _ = apply({'params': params}, tokens, train=True, method=t5.T5.encode,
                     rngs={'dropout': jax.random.PRNGKey(1)})
  np.testing.assert_allclose(encoded, jnp.broadcast_to(encoded[:, :1], encoded.shape), rtol=1e-5, atol=1e-6)
  deterministic, _ = apply({'params': params}, tokens, method=t5.T5.encode)
  assert not np.allclose(encoded, deterministic)  # dropout did act
  assert not np.allclose(encoded[0], encoded[1])  # with a mask of its own per example


def test_t5_cached_decoding_equals_full_decoding():
  """decode_step with the key/value cache gives, position by position, the logits of the full decoder, and
  greedy decoding with it picks the tokens that rerunning the decoder on the prefix picks."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from pgf_sparsity.tasks import decoding  # pylint: disable=g-import-not-at-top
  from pgf_sparsity import tasks
  from pgf_sparsity.models import t5  # pylint: disable=g-import-not-at-top
  model = t5.T5(vocab_size=32, d_model=32, d_ff=64, num_heads=4, head_dim=8, encoder_layers=2, decoder_layers=2)
  rng = np.random.default_rng(0)
  inputs = jnp.asarray(rng.integers(1, 32, (3, 9)))
  inputs = inputs.at[2, 6:].set(0)  # padding
  targets = jnp.asarray(rng.integers(1, 32, (3, 10)))
  params = jax.jit(model.init)(jax.random.PRNGKey(0), inputs, targets)['params']
  params = jax.tree.map(lambda p: p * 3.0, params)  # sharper logits: argmax ties are unlikely
  apply_fn = lambda p, *args, variables=None, **kwargs: model.apply({'params': p, **(variables or {})}, *args,
                                                                    **kwargs)
  apply = jitted_apply(model)
  full = apply({'params': params}, inputs, tasks.shift_right(targets))
  encoded, valid = apply({'params': params}, inputs, method=t5.T5.encode)
  decode_step = jax.jit(lambda p, cache, tokens, i: apply_fn(p, encoded, valid, tokens, i, 10, method='decode_step',
                                                             variables={'cache': cache}, mutable=['cache']))
  cache = model.empty_cache(3, 10)
  shifted = tasks.shift_right(targets)
  for i in range(10):
    logits, updated = decode_step(params, cache, shifted[:, i:i + 1], i)
    cache = updated['cache']
    np.testing.assert_allclose(logits[:, 0], full[:, i], rtol=1e-4, atol=1e-4)

  greedy = jax.jit(lambda p, x: decoding.greedy(apply_fn, p, x, 10, model.empty_cache(3, 10)))(params, inputs)
  tokens = jnp.zeros((3, 10), jnp.int32)
  for i in range(10):  # the reference: the whole decoder rerun on the prefix
    logits = apply({'params': params}, inputs, tasks.shift_right(tokens))
    tokens = tokens.at[:, i].set(jnp.argmax(logits[:, i], axis=-1))
  np.testing.assert_array_equal(np.asarray(greedy), np.asarray(tokens))


def test_t5_packed_examples_do_not_see_each_other():
  """Two examples packed into one row (segment ids 1 and 2) get, token for token, the logits each gets alone:
  no attention crosses examples, and each example's decoder starts from its own start token."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from pgf_sparsity import tasks  # pylint: disable=g-import-not-at-top
  from pgf_sparsity.models import t5  # pylint: disable=g-import-not-at-top
  model = t5.T5(vocab_size=32, d_model=32, d_ff=64, num_heads=4, head_dim=8, encoder_layers=2, decoder_layers=2)
  rng = np.random.default_rng(0)
  a_in, a_out, b_in, b_out = (rng.integers(2, 32, n) for n in (5, 4, 6, 3))
  params = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.ones((1, 12), jnp.int32), jnp.ones((1, 8), jnp.int32))
  params = jax.tree.map(lambda p: p * 2.0, params['params'])
  apply = jitted_apply(model)

  def alone(inputs, targets):
    return apply({'params': params}, jnp.asarray(inputs)[None], tasks.shift_right(jnp.asarray(targets)[None]))[0]

  inputs = jnp.asarray(np.concatenate([a_in, b_in, [0]]))[None]
  targets = jnp.asarray(np.concatenate([a_out, b_out, [0]]))[None]
  input_segments = jnp.asarray([[1] * 5 + [2] * 6 + [0]])
  target_segments = jnp.asarray([[1] * 4 + [2] * 3 + [0]])
  packed = apply({'params': params}, inputs, tasks.shift_right(targets, target_segments),
                 encoder_segment_ids=input_segments, decoder_segment_ids=target_segments)[0]
  np.testing.assert_allclose(packed[:4], alone(a_in, a_out), rtol=1e-4, atol=1e-4)  # round-off
  np.testing.assert_allclose(packed[4:7], alone(b_in, b_out), rtol=1e-4, atol=1e-4)
  # Without the segment ids, the second example would see the first.
  unpacked = apply({'params': params}, inputs, tasks.shift_right(targets))[0]
  assert not np.allclose(unpacked[4:7], alone(b_in, b_out), atol=1e-3)
