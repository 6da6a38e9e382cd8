"""Parameters from the formats people hold, as this package's Flax parameter trees ({path: array}).

  hf_t5      Hugging Face T5 v1.1 weights (`model.safetensors`, or the directory holding it), e.g.
             google/t5-v1_1-base saved with `save_pretrained`: PyTorch `(out, in)` Linear weights.
  t5x        a T5X checkpoint of T5 v1.1 (the directory `checkpoint_N`, or its `checkpoint` file), as T5X
             writes them: a msgpack state dict whose arrays are inline or TensorStore (zarr) references to
             files beside it, `(in, out)` kernels, e.g. gs://t5-data/pretrained_models/t5x/t5_1_1_base/...
  big_vision a ViT `.npz` in the layouts of big_vision and of google-research/vision_transformer (the AugReg
             checkpoints): per-head (d, heads, head_dim) attention kernels, MlpBlock/Dense names.

Numpy (and TensorStore for T5X). Each converter names the parameter it cannot place; shapes are checked by the
caller against the model's (training/initialise.py).
"""
import re
from typing import Dict

import numpy as np
from etils import epath

from pgf_sparsity.formats import model_files

Flat = Dict[str, np.ndarray]

# Hugging Face T5 block sub-layers, per stack: (layer index, HF module) -> our module.
_HF_T5_ENCODER = {('0', 'SelfAttention'): 'attention', ('0', 'layer_norm'): 'pre_attention_norm',
                  ('1', 'DenseReluDense'): 'mlp', ('1', 'layer_norm'): 'pre_mlp_norm'}
_HF_T5_DECODER = {('0', 'SelfAttention'): 'self_attention', ('0', 'layer_norm'): 'pre_self_attention_norm',
                  ('1', 'EncDecAttention'): 'cross_attention', ('1', 'layer_norm'): 'pre_cross_attention_norm',
                  ('2', 'DenseReluDense'): 'mlp', ('2', 'layer_norm'): 'pre_mlp_norm'}
_HF_T5_PROJECTIONS = {'q': 'query', 'k': 'key', 'v': 'value', 'o': 'out', 'wi_0': 'wi_0', 'wi_1': 'wi_1',
                      'wo': 'wo'}
_HF_T5_TOP = {'shared.weight': ('token_embedding', False), 'lm_head.weight': ('lm_head/kernel', True),
              'encoder.final_layer_norm.weight': ('encoder_norm/scale', False),
              'decoder.final_layer_norm.weight': ('decoder_norm/scale', False)}
_HF_T5_TIED = ('encoder.embed_tokens.weight', 'decoder.embed_tokens.weight')  # copies of shared.weight
_HF_T5_BLOCK = re.compile(r'(encoder|decoder)\.block\.(\d+)\.layer\.(\d+)\.(\w+)\.(?:(\w+)\.)?weight')


def _hf_t5_name(name: str):
  """(our path, transpose?) of a Hugging Face T5 v1.1 tensor name; ValueError for one we cannot place."""
  if name in _HF_T5_TOP:
    return _HF_T5_TOP[name]
  match = _HF_T5_BLOCK.fullmatch(name)
  if match is None:
    raise ValueError(f'Hugging Face T5 tensor {name!r} has no counterpart in this T5 (a T5 v1.1 checkpoint with '
                     'gated-GELU feed-forward layers and untied embeddings is expected).')
  stack, block, sublayer, module, projection = match.groups()
  if projection == 'relative_attention_bias':
    return f'{stack}_position_bias/rel_embedding', True  # HF (buckets, heads), ours (heads, buckets)
  ours = (_HF_T5_ENCODER if stack == 'encoder' else _HF_T5_DECODER).get((sublayer, module))
  if ours is None or (projection is not None and projection not in _HF_T5_PROJECTIONS):
    raise ValueError(f'Hugging Face T5 tensor {name!r} has no counterpart in this T5.')
  layer = f'{stack}_layers_{block}/{ours}'
  if projection is None:  # a layer norm's weight
    return f'{layer}/scale', False
  return f'{layer}/{_HF_T5_PROJECTIONS[projection]}/kernel', True


def hf_t5(path: str) -> Flat:
  """T5 parameters from Hugging Face T5 v1.1 weights.

  Args:
    path: a safetensors file, or a directory holding model.safetensors.

  Returns:
    {Flax path of models/t5.py: numpy array}, kernels transposed to Flax's (in, out).
  """
  location = epath.Path(path)
  if location.is_dir():
    location = location / 'model.safetensors'
  if not location.exists():
    raise FileNotFoundError(f'{str(location)!r} does not exist (a Hugging Face model.safetensors is expected).')
  out = {}
  for name, array in model_files.safetensors_arrays(str(location)).items():
    if name in _HF_T5_TIED:
      continue
    ours, transpose = _hf_t5_name(name)
    out[ours] = np.ascontiguousarray(array.T if transpose else array)
  if 'lm_head/kernel' not in out and 'token_embedding' in out:
    # transformers >= 5 saves T5 v1.1 with the output layer tied to the embedding (and unscaled); older
    # files, like the released checkpoints, hold lm_head.weight.
    out['lm_head/kernel'] = np.ascontiguousarray(out['token_embedding'].T)
  return out


# T5X's T5 v1.1 module names (t5x/examples/t5/network.py) -> ours; kernels are (in, out) in both.
_T5X_RENAMES = [(re.compile(r'^token_embedder/embedding$'), 'token_embedding'),
                (re.compile(r'^(encoder|decoder)/relpos_bias/'), r'\1_position_bias/'),
                (re.compile(r'^decoder/logits_dense/'), 'lm_head/'),
                (re.compile(r'^(encoder|decoder)/(encoder|decoder)_norm/'), r'\2_norm/'),
                (re.compile(r'^(encoder|decoder)/layers_(\d+)/'), r'\1_layers_\2/'),
                (re.compile(r'/encoder_decoder_attention/'), '/cross_attention/'),
                (re.compile(r'/pre_(self_attention|cross_attention|attention|mlp)_layer_norm/'), r'/pre_\1_norm/')]


def _t5x_read(value, directory: str) -> np.ndarray:
  """An inline array, or the array a TensorStore spec (relative to the checkpoint directory) points at."""
  if not isinstance(value, dict):
    return np.asarray(value)
  import tensorstore  # pylint: disable=g-import-not-at-top
  spec = dict(value)
  kvstore = dict(spec.get('kvstore') or {})
  relative = kvstore.pop('path', None) or spec.pop('path')  # tensorstore < 0.1.14 kept 'path' at the top
  location = str(epath.Path(directory) / relative)
  if location.startswith('gs://'):
    bucket, _, key = location[len('gs://'):].partition('/')
    kvstore = {'driver': 'gcs', 'bucket': bucket, 'path': key}
  else:
    kvstore = {'driver': 'file', 'path': location}
  spec['kvstore'] = kvstore
  return np.asarray(tensorstore.open(spec, open=True).result().read().result())


def t5x(path: str) -> Flat:
  """T5 parameters from a T5X checkpoint of T5 v1.1 (msgpack with TensorStore arrays).

  Args:
    path: the checkpoint directory (checkpoint_<step>).

  Returns:
    {Flax path of models/t5.py: numpy array} from its 'target' tree; the optimizer state is ignored.
  """
  from flax import serialization  # pylint: disable=g-import-not-at-top
  location = epath.Path(path)
  if location.is_dir():
    location = location / 'checkpoint'
  if not location.exists():
    raise FileNotFoundError(f'{str(location)!r} does not exist (a T5X checkpoint directory is expected).')
  contents = serialization.msgpack_restore(location.read_bytes())
  target = contents.get('optimizer', contents).get('target')
  if target is None:
    raise ValueError(f'{str(location)!r} holds no optimizer/target tree: not a T5X checkpoint.')
  out = {}
  for keys, value in _flatten_state(target).items():
    name = '/'.join(keys)
    ours = name
    for pattern, replacement in _T5X_RENAMES:
      ours = pattern.sub(replacement, ours)
    if ours == name:
      raise ValueError(f'T5X parameter {name!r} has no counterpart in this T5 (T5 v1.1 is expected).')
    out[ours] = _t5x_read(value, str(location.parent))
  if 'lm_head/kernel' not in out and 'token_embedding' in out:
    # T5X without logits_dense computes logits with the embedding, scaled by 1 / sqrt(d_model)
    embedding = out['token_embedding']
    out['lm_head/kernel'] = np.ascontiguousarray(embedding.T / np.sqrt(embedding.shape[1]))
  return out


def _flatten_state(tree, prefix=()) -> Dict[tuple, object]:
  """{key path: leaf}, where a TensorStore spec (a dict with 'driver') counts as a leaf."""
  if isinstance(tree, dict) and 'driver' not in tree:
    return {k: v for key, sub in tree.items() for k, v in _flatten_state(sub, prefix + (key,)).items()}
  return {prefix: tree}


_BV_RENAMES = [(re.compile(r'^(params|opt/target)/'), ''),
               (re.compile(r'^Transformer/posembed_input/pos_embedding$'), 'pos_embedding'),
               (re.compile(r'/MultiHeadDotProductAttention_\d+/'), '/attention/'),
               (re.compile(r'/MlpBlock_\d+/Dense_0/'), '/mlp/fc1/'),
               (re.compile(r'/MlpBlock_\d+/Dense_1/'), '/mlp/fc2/'),
               (re.compile(r'/LayerNorm_2/'), '/LayerNorm_1/')]  # vision_transformer numbers its modules 0..3


def _bv_array(path: str, array: np.ndarray) -> np.ndarray:
  """Per-head attention arrays flattened to our 2-D (in, heads * head_dim) / (heads * head_dim, out) form."""
  if '/attention/' not in path:
    return array
  if path.endswith('/out/kernel'):
    return array.reshape(-1, array.shape[-1])
  if path.endswith('/kernel'):
    return array.reshape(array.shape[0], -1)
  return array.reshape(-1)  # biases: (heads, head_dim), or the output's (d,)


def big_vision(path: str) -> Flat:
  """ViT parameters from a big_vision or vision_transformer (AugReg) `.npz`.

  Args:
    path: the .npz file; scanned encoders are unstacked, per-head attention arrays reshaped.

  Returns:
    {Flax path of models/vit.py: numpy array}.
  """
  with epath.Path(path).open('rb') as f, np.load(f, allow_pickle=False) as data:
    arrays = {k: data[k] for k in data.files}
  out = {}
  for name, array in arrays.items():
    ours = name
    for pattern, replacement in _BV_RENAMES:
      ours = pattern.sub(replacement, ours)
    if ours.startswith('Transformer/encoderblock/'):  # a scanned encoder: blocks stacked on a leading axis
      for i, block in enumerate(array):
        layer = ours.replace('encoderblock/', f'encoderblock_{i}/')
        out[layer] = _bv_array(layer, block)
    else:
      out[ours] = _bv_array(ours, array)
  return out


FORMATS = {'hf_t5': hf_t5, 't5x': t5x, 'big_vision': big_vision}
