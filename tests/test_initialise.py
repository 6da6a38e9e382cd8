"""Starting from trained parameters: another run's workdir, and Hugging Face T5 v1.1 weights checked against
transformers' own T5 (same logits)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import build_experiment, load_config
from pgf_sparsity import config_lib
from pgf_sparsity.formats import converters
from pgf_sparsity.models import t5
from pgf_sparsity.sparsity import tree_paths
from pgf_sparsity.training import initialise, train

TINY = dict(vocab_size=64, d_model=32, d_ff=48, num_heads=4, head_dim=8, encoder_layers=2, decoder_layers=3)


def _hf_tiny_t5(directory):
  """A random tiny T5 v1.1 (gated GELU, untied embeddings) saved by transformers as model.safetensors."""
  transformers = pytest.importorskip('transformers')
  torch = pytest.importorskip('torch')
  torch.manual_seed(0)
  config = transformers.T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=3,
                                 num_heads=4, feed_forward_proj='gated-gelu', tie_word_embeddings=False,
                                 dropout_rate=0.0, relative_attention_num_buckets=32,
                                 relative_attention_max_distance=128, decoder_start_token_id=0)
  model = transformers.T5ForConditionalGeneration(config).eval()
  with torch.no_grad():  # T5's init leaves some tensors at constants; randomise everything
    for p in model.parameters():
      p.copy_(torch.randn_like(p) * 0.3)
  model.save_pretrained(directory, safe_serialization=True)
  return model, torch


def test_hf_t5_weights_give_transformers_logits(tmp_path):
  model, torch = _hf_tiny_t5(tmp_path)
  rng = np.random.default_rng(0)
  inputs = rng.integers(1, 64, (2, 11))
  inputs[1, 7:] = 0  # padding
  decoder = rng.integers(1, 64, (2, 6))
  with torch.no_grad():
    expected = model(input_ids=torch.tensor(inputs), attention_mask=torch.tensor(inputs > 0),
                     decoder_input_ids=torch.tensor(decoder)).logits.numpy()
  params = tree_paths.nest(converters.hf_t5(str(tmp_path)))
  ours = jax.jit(t5.T5(**TINY).apply)({'params': jax.tree.map(jnp.asarray, params)}, jnp.asarray(inputs),
                                      jnp.asarray(decoder))
  np.testing.assert_allclose(np.asarray(ours), expected, rtol=1e-4, atol=1e-4)


def test_hf_t5_tensor_without_counterpart_is_named(tmp_path):
  with pytest.raises(ValueError, match='encoder.block.0.layer.1.DenseReluDense.wi.weight'):
    converters._hf_t5_name('encoder.block.0.layer.1.DenseReluDense.wi.weight')  # v1.0's ReLU MLP
  with pytest.raises(FileNotFoundError, match='model.safetensors'):
    converters.hf_t5(str(tmp_path))


def test_fine_tune_starts_from_another_runs_parameters_and_masks(tmp_path):
  source = load_config('digits', 'recipe=static,steps=20')
  trained, _ = train.train_and_evaluate(source, str(tmp_path / 'pretrain'))
  config = load_config('digits', 'recipe=static,steps=20,seed=1')
  config.init.update(path=str(tmp_path / 'pretrain'), masks='keep')
  exp, _ = build_experiment(config)
  state = initialise.initialised_state(config.init, exp, exp.initial_state())
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(trained.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  for a, b in zip(jax.tree.leaves(state.masks), jax.tree.leaves(trained.masks)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert int(state.step) == 0
  assert all(float(jnp.abs(x).max()) == 0.0 for x in jax.tree.leaves(state.opt_state) if x.ndim > 0)
  # Through the loop: a fresh run is initialised, and starts near where the source ended.
  _, results = train.train_and_evaluate(config, str(tmp_path / 'finetune'), max_steps_this_run=1)
  fresh = load_config('digits', 'recipe=static,steps=20,seed=1')
  _, fresh_results = train.train_and_evaluate(fresh, str(tmp_path / 'fresh'), max_steps_this_run=1)
  assert results['eval']['accuracy'] > fresh_results['eval']['accuracy'] + 0.2


def test_mismatched_source_fails_naming_the_parameter(tmp_path):
  train.train_and_evaluate(load_config('digits', 'recipe=static,steps=2'), str(tmp_path / 'small'))
  config = load_config('digits', 'recipe=static,steps=2')
  config.model.mlp_dim = 128
  config.init.path = str(tmp_path / 'small')
  exp, _ = build_experiment(config)
  message = r'parameter Transformer/encoderblock_0/mlp/fc1/bias has shape \(64,\) .*needs \(128,\)'
  with pytest.raises(ValueError, match=message):
    initialise.initialised_state(config.init, exp, exp.initial_state())


def test_resampled_position_embedding_follows_the_order_1_zoom():
  rows, cols = np.meshgrid(np.arange(4.0), np.arange(4.0), indexing='ij')
  grid = np.stack([rows, cols], -1).reshape(16, 2)
  source = np.concatenate([[[7.0, -7.0]], grid])[None]  # a class token, then a 4x4 grid linear in position
  out = initialise.resample_pos_embedding(source, 1 + 36)
  np.testing.assert_array_equal(out[0, 0], [7.0, -7.0])
  new_rows, new_cols = np.meshgrid(np.arange(6.0), np.arange(6.0), indexing='ij')
  # order-1 zoom maps corner to corner: new index i sits at old coordinate i * (4 - 1) / (6 - 1)
  expected = np.stack([new_rows, new_cols], -1).reshape(36, 2) * 3 / 5
  np.testing.assert_allclose(out[0, 1:], expected, atol=1e-6)
  with pytest.raises(ValueError, match='class-token rows differ'):
    initialise.resample_pos_embedding(source, 36)


def test_fine_tune_at_another_resolution_with_a_new_head(tmp_path):
  source = load_config('digits', 'recipe=static,steps=2')
  trained, _ = train.train_and_evaluate(source, str(tmp_path / 'pretrain'))
  config = load_config('digits', 'recipe=static,steps=2,seed=3')
  config.model.patch_size = source.model.patch_size // 2  # 4x as many tokens (digits come at one resolution)
  config.init.update(path=str(tmp_path / 'pretrain'), reset='^(head|embedding)/')
  exp, _ = build_experiment(config)
  fresh = exp.initial_state()
  state = initialise.initialised_state(config.init, exp, fresh)
  params, old, new = (tree_paths.flatten(jax.device_get(t)) for t in (state.params, trained.params, fresh.params))
  for path, value in params.items():
    if path.startswith(('head/', 'embedding/')):
      np.testing.assert_array_equal(value, new[path])
    elif path == 'pos_embedding':
      np.testing.assert_allclose(value, initialise.resample_pos_embedding(old[path], value.shape[1]), atol=1e-6)
    else:
      np.testing.assert_array_equal(value, old[path])


@pytest.mark.parametrize('init,message', [
    ({'path': '/nonexistent/run'}, 'does not exist'),
    ({'path': '.', 'format': 'pytorch'}, 'config.init.format'),
    ({'path': '.', 'masks': 'some'}, 'config.init.masks'),
    ({'path': '.', 'format': 'hf_t5', 'masks': 'keep'}, "needs format 'workdir'"),
    ({'path': '.', 'step': 3}, 'Unknown config key init.step'),
    ({'path': '.', 'reset': '(head'}, 'not a regular expression'),
])
def test_bad_init_blocks_are_refused(init, message):
  with pytest.raises((ValueError, FileNotFoundError), match=message):
    initialise.check(config_lib.complete_block('init', init))


def _vit_and_params():
  from pgf_sparsity import models  # pylint: disable=g-import-not-at-top
  model = models.build(dict(name='vit', variant=None, width=32, depth=2, mlp_dim=64, num_heads=4, patch_size=4,
                            pool='token', dtype='float32', num_classes=10), 10)
  images = jnp.asarray(np.random.default_rng(0).normal(size=(2, 16, 16, 3)), jnp.float32)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), images)['params']
  params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.PRNGKey(1), p.shape), params)
  return model, params, images


def _augreg_layout(params, scanned: bool):
  """`params` written as google-research/vision_transformer (AugReg) or scanned big_vision checkpoints name and
  shape them: per-head attention arrays (heads 4, head_dim 8)."""
  out = {}
  for path, array in tree_paths.flatten(jax.tree.map(np.asarray, params)).items():
    if '/attention/' in path:
      if path.endswith('out/kernel'):
        array = array.reshape(4, 8, -1)
      elif path.endswith('kernel'):
        array = array.reshape(array.shape[0], 4, 8)
      elif not path.endswith('out/bias'):
        array = array.reshape(4, 8)
    attention, mlp = ('MultiHeadDotProductAttention_0', 'MlpBlock_0') if scanned else (
        'MultiHeadDotProductAttention_1', 'MlpBlock_3')  # big_vision vs vision_transformer module numbering
    path = (path.replace('/attention/', f'/{attention}/').replace('/mlp/fc1/', f'/{mlp}/Dense_0/')
            .replace('/mlp/fc2/', f'/{mlp}/Dense_1/'))
    if not scanned:
      path = path.replace('/LayerNorm_1/', '/LayerNorm_2/')
    if path == 'pos_embedding' and not scanned:
      path = 'Transformer/posembed_input/pos_embedding'
    out[('params/' if scanned else '') + path] = array
  if scanned:  # big_vision's scan: one 'encoderblock' with the blocks stacked
    blocks = sorted({k.split('/')[2] for k in out if '/encoderblock_' in k})
    for key in [k for k in out if '/encoderblock_0/' in k]:
      out[key.replace('encoderblock_0', 'encoderblock')] = np.stack([out[key.replace('encoderblock_0', b)]
                                                                   for b in blocks])
    out = {k: v for k, v in out.items() if '/encoderblock_' not in k}
  return out


def test_big_vision_and_augreg_npz_give_the_same_vit(tmp_path):
  model, params, images = _vit_and_params()
  apply = jax.jit(model.apply)
  expected = apply({'params': params}, images)
  for scanned in (False, True):
    path = str(tmp_path / f'vit_{scanned}.npz')
    np.savez(path, **_augreg_layout(params, scanned))
    converted = tree_paths.nest(converters.big_vision(path))
    assert set(tree_paths.flatten(converted)) == set(tree_paths.flatten(params))
    logits = apply({'params': jax.tree.map(jnp.asarray, converted)}, images)
    np.testing.assert_allclose(np.asarray(logits), np.asarray(expected), rtol=1e-6, atol=1e-6)


# Hugging Face T5 module -> T5X module (the mapping of transformers' convert_t5x_checkpoint_to_pytorch).
_T5X_OF_HF = {('encoder', '0', 'SelfAttention'): 'attention', ('encoder', '0', 'layer_norm'): 'pre_attention_layer_norm',
              ('encoder', '1', 'DenseReluDense'): 'mlp', ('encoder', '1', 'layer_norm'): 'pre_mlp_layer_norm',
              ('decoder', '0', 'SelfAttention'): 'self_attention',
              ('decoder', '0', 'layer_norm'): 'pre_self_attention_layer_norm',
              ('decoder', '1', 'EncDecAttention'): 'encoder_decoder_attention',
              ('decoder', '1', 'layer_norm'): 'pre_cross_attention_layer_norm',
              ('decoder', '2', 'DenseReluDense'): 'mlp', ('decoder', '2', 'layer_norm'): 'pre_mlp_layer_norm'}
_T5X_PROJECTION = {'q': 'query', 'k': 'key', 'v': 'value', 'o': 'out', 'wi_0': 'wi_0', 'wi_1': 'wi_1', 'wo': 'wo'}


def _t5x_name(name):
  """T5X's path and (in, out) array orientation for a Hugging Face T5 v1.1 tensor name."""
  top = {'shared.weight': ('token_embedder/embedding', False), 'lm_head.weight': ('decoder/logits_dense/kernel', True),
         'encoder.final_layer_norm.weight': ('encoder/encoder_norm/scale', False),
         'decoder.final_layer_norm.weight': ('decoder/decoder_norm/scale', False)}
  if name in top:
    return top[name]
  parts = name.split('.')
  stack, block, sub, module = parts[0], parts[2], parts[4], parts[5]
  if parts[6] == 'relative_attention_bias':
    return f'{stack}/relpos_bias/rel_embedding', True
  layer = f'{stack}/layers_{block}/{_T5X_OF_HF[(stack, sub, module)]}'
  return (f'{layer}/scale', False) if module == 'layer_norm' else (f'{layer}/{_T5X_PROJECTION[parts[6]]}/kernel', True)


def _write_t5x_checkpoint(model, directory, written_to='local'):
  """model's weights laid out as T5X's own Checkpointer.save writes them (t5x/checkpoints.py): a msgpack
  {'version': 3, 'optimizer': {'target': ..., 'state': ...}} in DIR/checkpoint; each partitioned array
  (here every 2-D one) in a gzip'd zarr TensorStore named after its path with '.' for '/', its msgpack leaf
  the JSON of that ts.Spec with the path relative to DIR; unpartitioned ones inline. Written to gs:// (then
  copied to a disk), the spec holds the relative path at its top level and a gcs kvstore with T5X's dummy
  bucket instead. The names follow transformers' convert_t5x_checkpoint_to_pytorch."""
  import tensorstore  # pylint: disable=g-import-not-at-top
  from flax import serialization, traverse_util  # pylint: disable=g-import-not-at-top
  target = {}
  for name, tensor in model.state_dict().items():
    if name in ('encoder.embed_tokens.weight', 'decoder.embed_tokens.weight'):
      continue
    path, transpose = _t5x_name(name)
    array = tensor.numpy().T if transpose else tensor.numpy()
    if array.ndim == 1:
      target[tuple(path.split('/'))] = np.ascontiguousarray(array)
      continue
    relative = 'target.' + path.replace('/', '.')
    metadata = {'compressor': {'id': 'gzip'}, 'shape': list(array.shape), 'chunks': list(array.shape)}
    spec = ({'driver': 'zarr', 'dtype': 'float32', 'kvstore': {'driver': 'file', 'path': relative},
             'metadata': metadata} if written_to == 'local' else
            {'driver': 'zarr', 'dtype': 'float32', 'kvstore': {'driver': 'gcs', 'bucket': 't5x-dummy-bucket'},
             'path': relative, 'metadata': metadata})
    store = tensorstore.open({'driver': 'zarr', 'dtype': 'float32', 'metadata': metadata,
                              'kvstore': {'driver': 'file', 'path': str(directory / relative)}}, create=True).result()
    store.write(np.ascontiguousarray(array)).result()
    target[tuple(path.split('/'))] = tensorstore.Spec(spec).to_json() if written_to == 'local' else spec
  state = {'version': 3, 'optimizer': {'target': traverse_util.unflatten_dict(target),
                                       'state': {'step': np.int32(1000), 'param_states': {'any': np.zeros(3)}}}}
  (directory / 'checkpoint').write_bytes(serialization.msgpack_serialize(state))


@pytest.mark.parametrize('written_to', ['local', 'gcs'])
def test_t5x_checkpoint_gives_transformers_logits(tmp_path, written_to):
  model, torch = _hf_tiny_t5(tmp_path / 'hf')
  checkpoint = tmp_path / 'checkpoint_1000'
  checkpoint.mkdir()
  _write_t5x_checkpoint(model, checkpoint, written_to)
  rng = np.random.default_rng(1)
  inputs, decoder = rng.integers(1, 64, (2, 9)), rng.integers(1, 64, (2, 5))
  with torch.no_grad():
    expected = model(input_ids=torch.tensor(inputs), decoder_input_ids=torch.tensor(decoder)).logits.numpy()
  params = tree_paths.nest(converters.t5x(str(checkpoint)))
  ours = jax.jit(t5.T5(**TINY).apply)({'params': jax.tree.map(jnp.asarray, params)}, jnp.asarray(inputs),
                                      jnp.asarray(decoder))
  np.testing.assert_allclose(np.asarray(ours), expected, rtol=1e-4, atol=1e-4)
  with pytest.raises(FileNotFoundError, match='T5X checkpoint directory'):
    converters.t5x(str(tmp_path / 'hf'))
