"""Config helpers, and the one table of defaults: every key the package reads has its default and its
meaning set once, here (the model blocks' in each model's DEFAULTS, the sparsity block's in the recipe's).

  complete(config)  the config with every key it leaves out at its default; unknown keys are an error. The
                    training loop, the tools and every config file go through it, so code reads
                    `config.key`, never a default of its own.
  reference()       every key with its default and meaning (docs/config.md is generated from it).

Configs are code, big_vision style: `file.py:key=value,flag` arguments (parse_arg), and helpers that build
the blocks every config shares.
"""
import importlib.util
import math
import os
from typing import Any, Dict, Iterator, Mapping, NamedTuple, Optional, Tuple

import ml_collections

from pgf_sparsity.models import t5
from pgf_sparsity.sparsity import recipe as recipe_lib
from pgf_sparsity.sparsity import schedules


class Key(NamedTuple):
  default: Any
  meaning: str


LOOP = {
    'seed': Key(0, 'Seed of the initialisation, the data order, dropout and augmentation.'),
    'batch_size': Key(128, 'Global training batch (divisible by the number of devices).'),
    'eval_batch_size': Key(None, 'Global evaluation batch; None: batch_size.'),
    'total_steps': Key(None, 'Training steps; give this or num_epochs.'),
    'num_epochs': Key(None, 'Training length in epochs of the training split; give this or total_steps.'),
    'log_every_steps': Key(100, 'Train metrics are averaged and logged every this many steps.'),
    'eval_every_steps': Key(1000, 'The exact N:M model is evaluated every this many steps, and at the end.'),
    'checkpoint_every_steps': Key(500, 'A checkpoint every this many steps, and at the end.'),
    'keep_checkpoints': Key(2, 'How many of the newest checkpoints to keep.'),
    'diagnostics_every_steps': Key(0, 'The gradient-noise diagnostic every this many steps; 0: off.'),
    'nonfinite': Key('stop', "A non-finite loss or gradient: 'stop' (no non-finite state is saved) or 'skip' "
                     '(the update is dropped and counted).'),
    'loss': Key('softmax', "Image classification loss: 'softmax' (cross entropy) or 'sigmoid' (binary, per class)."),
    'label_smoothing': Key(0.0, 'Label smoothing of the training loss, in [0, 1).'),
    'mixup_alpha': Key(0.0, 'Mixup Beta(alpha, alpha) in the train step (images); 0: off.'),
    'cutmix_alpha': Key(0.0, 'CutMix Beta(alpha, alpha) in the train step (images); 0: off.'),
    'mixup_switch_prob': Key(0.5, 'With both Mixup and CutMix: the probability of CutMix per batch.'),
    'random_erasing': Key(0.0, "Probability of timm's random erasing per image (pixel mode); 0: off."),
    'z_loss': Key(0.0, "T5X's z-loss coefficient (sequence-to-sequence tasks)."),
    'loss_normalizer': Key('tokens', "Text loss divided by the real target tokens ('tokens') or by every "
                           "target position of the batch ('padded', T5X's)."),
    'beam_size': Key(1, 'Beams of decoded evaluation (text tasks evaluated on decoded text); 1: greedy.'),
    'length_penalty': Key(0.6, "Beam search's length penalty alpha (T5's)."),
}
OPTIMIZER = {
    'name': Key('adamw', "'adamw' (weight decay on kernels) or 'adafactor' (T5X's defaults)."),
    'schedule': Key('cosine', "Learning-rate schedule: 'cosine' (warmup, cosine decay, optional cooldown), "
                    "'rsqrt' (T5X's inverse square root) or 'constant'."),
    'learning_rate': Key(None, 'Peak learning rate (required).'),
    'init_learning_rate': Key(0.0, 'Cosine: the learning rate at step 0, before warmup.'),
    'min_learning_rate': Key(0.0, 'Cosine: the learning rate at the end of the decay, and in the cooldown.'),
    'warmup_steps': Key(None, 'Warmup length in steps (or give warmup_epochs); None: no warmup.'),
    'warmup_epochs': Key(None, 'Warmup length in epochs (or give warmup_steps).'),
    'cooldown_epochs': Key(0.0, 'Cosine: epochs at the end held at min_learning_rate (timm).'),
    'weight_decay': Key(0.0, 'AdamW decoupled weight decay, on kernels only.'),
    'b1': Key(0.9, 'AdamW beta1.'),
    'b2': Key(0.999, 'AdamW beta2.'),
    'eps': Key(1e-8, 'AdamW epsilon.'),
    'grad_clip_norm': Key(1.0, 'Global-norm clipping of the gradient after the recipe\'s flow; 0: off.'),
}
INIT = {
    'path': Key('', 'Start from trained parameters: a workdir, or a checkpoint file of init.format; empty: '
                'from scratch.'),
    'format': Key('workdir', "'workdir' (a run's newest checkpoint), 'hf_t5', 't5x' or 'big_vision'."),
    'masks': Key('reset', "'keep' the workdir's masks, or 'reset' them."),
    'reset': Key('', 'Regex of parameter paths that keep the new model\'s initialisation (a new head, say).'),
}
MESH = {
    'data': Key(-1, 'Devices along the data-parallel axis; -1: the devices left.'),
    'fsdp': Key(1, 'Devices along the FSDP axis: parameters, masks and optimizer state sharded over them.'),
}
SPARSITY = {
    'recipe': 'One of dense, static, srste, mdgf_linear, mdgf_exponential, sdgf_stepwise, sdgf_geometric, '
              'sdgf_custom.',
    'flow': "Gradient to pruned weights: 'decayed' (beta * g) or 'ste' (g).",
    'alpha': 'MDGF decay coefficient of beta(t).',
    'srste_lambda': "SR-STE's regulariser lambda (recipe srste).",
    'group_axis': "N:M groups along the kernel's input axis ('in') or output axis ('out').",
    'targets': 'Sparse kernels: {name: {regex, n, m, in_ndim}}; the regex fully matches a parameter path.',
    'sdgf_custom': 'Recipe sdgf_custom: {target name: [[n, m], ...]}, one pattern per frame.',
    'dense_steps': 'Dense phase at the start, in steps (or _fraction of training, or _epochs).',
    'dense_fraction': 'Dense phase as a fraction of training.',
    'dense_epochs': 'Dense phase in epochs.',
    'finetune_steps': 'Fine-tune phase at the end (binary masks, beta 0), in steps.',
    'finetune_fraction': 'Fine-tune phase as a fraction of training.',
    'finetune_epochs': 'Fine-tune phase in epochs.',
    'mask_update_every': 'Masks recomputed every k sparse steps (and at every phase and frame start).',
}
VOCAB = {
    'kind': Key('byte', "'byte' (ByT5-style) or 'sentencepiece'."),
    'model_path': Key('', 'A SentencePiece .model file (Shakespeare: trained on the training plays if empty).'),
    'size': Key(2000, 'Shakespeare with SentencePiece: the pieces of the model trained on first use.'),
}
RANDAUGMENT = {
    'num_layers': Key(0, 'RandAugment ops per image; 0: off.'),
    'magnitude': Key(10.0, "Magnitude on timm's scale (10: each op's published maximum)."),
    'magnitude_max': Key(10.0, 'Magnitudes are clipped here (timm); None: extrapolate (big_vision).'),
    'magnitude_std': Key(0.0, "Each op's magnitude drawn around `magnitude` with this std (timm's mstd)."),
}
_OFFLINE_IMAGES = {
    'flip': Key(False, 'Random horizontal flips in training.'),
    'pad': Key(0, 'Pixels of zero padding before a random crop back to size; 0: off.'),
    'train_examples': Key(0, 'Use the first this many training examples; 0: all.'),
    'eval_examples': Key(0, 'Use the first this many test examples; 0: all.'),
}
_DATA_DIR = Key('', 'Where scripts/get_data.sh put the data; empty: $PGF_DATA_DIR, then data_cache/.')
_TFDS = {
    'tfds_name': Key('', 'The tfds dataset, e.g. imagenet2012 or c4/en:3.1.0 (prepared as ArrayRecord).'),
    'tfds_data_dir': Key('', "tfds's data_dir; empty: tfds's default."),
    'train_split': Key('train', 'Training split.'),
    'eval_split': Key('validation', 'Evaluation split.'),
    'num_train_examples': Key(0, 'Examples per epoch; 0: the split\'s size.'),
    'num_eval_examples': Key(0, 'Evaluate on the first this many examples; 0: all.'),
}
DATASETS = {
    'fashion_mnist': {'data_dir': _DATA_DIR, **_OFFLINE_IMAGES},
    'digits': dict(_OFFLINE_IMAGES),
    'synthetic': {
        'image_size': Key(224, 'Side of the square random images.'),
        'channels': Key(3, 'Channels of the random images.'),
        'num_classes': Key(1000, 'Classes of the random labels.'),
        'num_train_examples': Key(1_281_167, 'Examples per epoch (for epoch-based durations).'),
    },
    'tfds': {
        **_TFDS,
        'image_size': Key(224, 'Side of the random-resized crops.'),
        'flip': Key(True, 'Random horizontal flips in training.'),
        'randaugment': RANDAUGMENT,
    },
    'shakespeare': {
        'data_dir': _DATA_DIR,
        'vocab': VOCAB,
        'chunk_length': Key(128, 'Tokens per example before span corruption.'),
        'noise_density': Key(0.15, "Span corruption's fraction of noised tokens."),
        'mean_noise_span_length': Key(3.0, "Span corruption's mean span length."),
        'eval_examples': Key(512, 'Evaluation examples from the held-out plays.'),
    },
    'tfds_text': {
        **_TFDS,
        'vocab': VOCAB,
        'inputs_length': Key(128, 'Encoder length (C4: the span-corrupted inputs, 512 in T5).'),
        'targets_length': Key(32, 'Decoder length (C4: derived from inputs_length).'),
        'pack_factor': Key(1, 'Examples read per row and packed together; 1: no packing.'),
        'documents_per_row': Key(1.5, 'C4: documents read per row of the batch, concatenated and split.'),
        'source_language': Key('', 'Translation: the source language; empty: the first of the pair.'),
        'target_language': Key('', 'Translation: the target language; empty: the second of the pair.'),
    },
}
# The model block's keys are each model's own (models/*.py DEFAULTS), validated when it is built.
FREE_FORM = {'model'}


def _defaults(dataset_name: Optional[str]) -> Dict[str, Any]:
  """The default tree (Key leaves) of a config whose dataset is `dataset_name`."""
  return {**LOOP, 'optimizer': OPTIMIZER, 'init': INIT, 'mesh': MESH,
          'sparsity': {k: Key(v, SPARSITY[k]) for k, v in recipe_lib.DEFAULTS.items()},
          'dataset': {'name': Key(dataset_name, f'One of {sorted(DATASETS)}.'), **DATASETS.get(dataset_name, {})},
          'model': {}}


def _merged(defaults: Dict[str, Any], given: Mapping[str, Any], where: str) -> Dict[str, Any]:
  """`given` over `defaults` (a tree of Key leaves), key by key; `where` is the dotted prefix for messages."""
  if where.rstrip('.') in FREE_FORM:
    return dict(given)
  unknown = sorted(set(given) - set(defaults))
  if unknown:
    raise ValueError(f'Unknown config key{"s" if len(unknown) > 1 else ""} '
                     f'{", ".join(where + k for k in unknown)}; known: {sorted(defaults)}.')
  out = {}
  for key, default in defaults.items():
    if not isinstance(default, dict):
      out[key] = given[key] if key in given else default.default
      continue
    block = given[key] if key in given and given[key] is not None else {}
    if not isinstance(block, Mapping):
      raise ValueError(f'config.{where}{key} must be a block of keys, got {block!r}.')
    out[key] = _merged(default, block, f'{where}{key}.')
  return out


def _as_dict(config) -> Dict[str, Any]:
  return config.to_dict() if hasattr(config, 'to_dict') else dict(config)


def complete(config) -> ml_collections.ConfigDict:
  """`config` (a ConfigDict or a mapping) with every key it leaves out at its default; ValueError naming
  an unknown key. Idempotent."""
  given = _as_dict(config)
  name = dict(given.get('dataset') or {}).get('name')
  if name not in DATASETS:
    raise ValueError(f'Unknown dataset.name {name!r}; choose one of {sorted(DATASETS)}.')
  return ml_collections.ConfigDict(_merged(_defaults(name), given, ''))


def complete_block(block: str, given: Mapping[str, Any],
                   dataset_name: Optional[str] = None) -> ml_collections.ConfigDict:
  """One block completed alone ('optimizer', 'dataset', 'dataset.vocab', ...), for code that builds a
  single piece (a pipeline in a test, a vocabulary)."""
  tree = _defaults(dataset_name)
  for part in block.split('.'):
    tree = tree[part]
  return ml_collections.ConfigDict(_merged(tree, _as_dict(given), block + '.'))


def default_of(path: str):
  """The default of a key given by its dotted path, e.g. 'optimizer.b1' or 'z_loss'."""
  *blocks, key = path.split('.')
  tree = _defaults(None)
  for part in blocks:
    tree = tree[part]
  return tree[key].default


def reference() -> Iterator[Tuple[str, Any, str]]:
  """(dotted key, default, meaning) of every key of the table, dataset blocks per dataset name."""
  def walk(tree, prefix):
    for key, value in tree.items():
      if isinstance(value, dict):
        yield from walk(value, f'{prefix}{key}.')
      else:
        yield prefix + key, value.default, value.meaning
  tree = _defaults(None)
  tree.pop('dataset')
  tree.pop('model')
  yield from walk(tree, '')
  yield 'dataset.name', None, f'One of {sorted(DATASETS)}; the other dataset keys depend on it.'
  for name, block in DATASETS.items():
    yield from walk(block, f'dataset[{name}].')


# Arguments every config takes (a config may change the defaults): the recipe, an N:M pattern (or 'none')
# per target kind, the gradient flow, MDGF's alpha (0: derived from the run length), the dense and fine-tune
# phases as fractions of training, the seed, and runlocal (a seconds-long smoke run).
SPARSITY_ARGS = dict(recipe='mdgf_exponential', ff='1:8', qkv='none', attn_out='none', flow='decayed', alpha=0.0,
                     dense=0.0, finetune=0.0, seed=0, runlocal=False)
# T5 configs: dec_ff, dec_qkv, dec_attn_out give the decoder its own pattern unless 'same'.
T5_ARGS = dict(dec_ff='same', dec_qkv='same', dec_attn_out='same')


def _typed(key: str, value: str, default):
  """`value` converted to the type of the argument's default, or a ValueError naming the argument."""
  kind = type(default).__name__
  try:
    if isinstance(default, bool):
      if value.lower() not in ('true', 'false', '1', '0'):
        raise ValueError
      return value.lower() in ('true', '1')
    if isinstance(default, int):
      return int(value)
    if isinstance(default, float):
      number = float(value)
      if not math.isfinite(number):
        raise ValueError
      return number
  except ValueError:
    expected = {'bool': 'true/false', 'int': 'an integer', 'float': 'a finite number'}[kind]
    raise ValueError(f'Config argument {key} needs {expected}, got {value!r}.') from None
  return value


def parse_arg(arg: str, **defaults) -> ml_collections.ConfigDict:
  """'recipe=static,ff=1:8,runlocal' -> defaults updated, typed like the default (bare key = True)."""
  out = dict(defaults)
  for item in filter(None, (arg or '').split(',')):
    key, sep, value = item.partition('=')
    if key not in out:
      raise ValueError(f'Unknown config argument {key!r}; known: {sorted(out)}.')
    out[key] = _typed(key, value, out[key]) if sep else True
  return ml_collections.ConfigDict(out)


def from_file(path: str, arg: str = '') -> ml_collections.ConfigDict:
  """`get_config(arg)` of the config file at `path`, what `--config=path:arg` loads (for tools and tests)."""
  spec = importlib.util.spec_from_file_location(f'config_{os.path.basename(path)[:-3]}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def parse_pattern(text: str):
  """'1:8' -> (1, 8); '' or 'none' -> None."""
  if not text or text.lower() == 'none':
    return None
  try:
    n, m = (int(v) for v in text.split(':'))
  except ValueError:
    raise ValueError(f'An N:M pattern looks like "1:8", got {text!r}.') from None
  return n, m


def sparsity_config(recipe: str, targets: Dict[str, Any], **keys) -> Dict[str, Any]:
  """The sparsity block: `recipe`, the targets {name: (regex, 'n:m' or None)} (entries without a pattern
  are left dense), and any other keys of the block (flow, alpha, dense_fraction, ...)."""
  config = dict(recipe=recipe, targets={}, **keys)
  for name, (regex, pattern) in targets.items():
    nm = parse_pattern(pattern)
    if nm:
      config['targets'][name] = {'regex': regex, 'n': nm[0], 'm': nm[1]}
  return config


def sparsity_from_args(a, targets: Dict[str, str], alpha: float) -> ml_collections.ConfigDict:
  """The sparsity block from parsed config arguments (recipe, flow, dense, finetune and one N:M argument
  per target name)."""
  return sparsity_config(a.recipe, {name: (regex, a[name]) for name, regex in targets.items()}, flow=a.flow,
                         alpha=alpha, dense_fraction=a.dense, finetune_fraction=a.finetune)


def t5_sparsity_from_args(a, alpha: float) -> ml_collections.ConfigDict:
  """Like sparsity_from_args for T5: arguments ff, qkv, attn_out set encoder and decoder together, and
  dec_ff, dec_qkv, dec_attn_out (when not 'same') give the decoder its own pattern."""
  targets = {}
  for name, regex in t5.SPARSE_LAYERS.items():
    decoder = a[f'dec_{name}']
    if decoder == 'same':
      targets[name] = (f'({t5.ENCODER}|{t5.DECODER})' + regex, a[name])
    else:
      targets[f'enc_{name}'] = (t5.ENCODER + regex, a[name])
      targets[f'dec_{name}'] = (t5.DECODER + regex, decoder)
  return sparsity_config(a.recipe, targets, flow=a.flow, alpha=alpha, dense_fraction=a.dense,
                         finetune_fraction=a.finetune)


def t5_model(variant: str, *, dropout: float, dtype: str) -> Dict[str, Any]:
  """The model block of the T5 configs (the vocabulary size comes from the data)."""
  return dict(name='t5', variant=variant, vocab_size=None, dropout=dropout, tie_embeddings=False, dtype=dtype)


def set_t5x_loss(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """T5X's loss: z-loss 1e-4, and the sum of token losses divided by every target position of the batch."""
  config.z_loss = 1e-4
  config.loss_normalizer = 'padded'
  return config


def decay_alpha(a, total_steps: int) -> float:
  """The alpha argument, or (when 0) the one that brings the recipe's beta to 0.01 at 80% of the sparse
  phase (each MDGF schedule with its own formula; 0 for recipes without a decay)."""
  if a.alpha or not a.recipe.startswith('mdgf_'):
    return a.alpha
  sparse_steps = total_steps * (1.0 - a.dense - a.finetune)
  return schedules.decay_alpha(a.recipe.split('_', 1)[1], sparse_steps)


def set_intervals(config: ml_collections.ConfigDict, *, log_every: int, eval_every: int, checkpoint_every: int,
                  runlocal: bool = False) -> ml_collections.ConfigDict:
  """The loop's intervals; returns `config`. With `runlocal` (a seconds-long smoke run of
  config.total_steps steps): log every 10 steps, evaluate and checkpoint at the end."""
  if runlocal:
    log_every, eval_every, checkpoint_every = 10, config.total_steps, config.total_steps
  config.log_every_steps = log_every
  config.eval_every_steps = eval_every
  config.checkpoint_every_steps = checkpoint_every
  return config


def optimizer(learning_rate: float, **keys) -> Dict[str, Any]:
  """The optimizer block (AdamW on warmup-cosine unless `keys` say otherwise; training/optim.py): the
  learning rate and the keys that differ from their defaults."""
  return dict(learning_rate=learning_rate, **keys)


def set_t5_optimizer(config: ml_collections.ConfigDict, name: str, *, adafactor: Dict[str, Any],
                     adamw: Dict[str, Any]) -> None:
  """T5X's optimizer choice: Adafactor (`adafactor`: learning_rate, schedule, warmup_steps; no global-norm
  clipping, Adafactor clips its updates), or AdamW (the `adamw` block) with scaled attention logits, since
  T5's query-initialisation scaling is only equivalent under Adafactor."""
  if name not in ('adafactor', 'adamw'):
    raise ValueError(f"Config argument opt must be 'adafactor' or 'adamw', got {name!r}.")
  config.optimizer = (dict(name='adafactor', grad_clip_norm=0.0, **adafactor) if name == 'adafactor'
                      else dict(adamw))
  config.model.scale_attention_logits = name == 'adamw'


def imagenet_dataset(image_size: int, randaugment, magnitude_std: float = 0.0) -> Dict[str, Any]:
  """The dataset block of the ImageNet-1k configs (tfds imagenet2012); randaugment = (ops, magnitude) on
  timm's scale, clipped at magnitude_max 10 as timm does (None: big_vision's extrapolation); magnitude_std
  draws each op's magnitude around it (timm's mstd)."""
  augment = dict(num_layers=randaugment[0], magnitude=randaugment[1], magnitude_max=10.0,
                 magnitude_std=magnitude_std)
  return dict(name='tfds', tfds_name='imagenet2012', tfds_data_dir='', train_split='train', eval_split='validation',
              image_size=image_size, flip=True, randaugment=augment, num_train_examples=0, num_eval_examples=0)


def imagenet_runlocal(config: ml_collections.ConfigDict, model: Dict[str, Any]) -> None:
  """An ImageNet config shrunk to a seconds-long smoke run: `model` sizes, 32 px images, 4 steps of 8
  examples (works on tfds mock data)."""
  config.model.update(model)
  config.dataset.update(image_size=32, num_train_examples=64, num_eval_examples=24)
  config.batch_size = config.eval_batch_size = 8
  config.num_epochs = 0.5
  config.optimizer.update(warmup_epochs=0.25, cooldown_epochs=0.0)
  config.update(log_every_steps=2, eval_every_steps=4, checkpoint_every_steps=4)
  config.sparsity.alpha = 0.1


def t5_runlocal(config: ml_collections.ConfigDict) -> None:
  """A T5 config shrunk to a seconds-long smoke run: the tiny variant in float32, 4 steps of 8 examples."""
  config.model.update(variant='tiny', dtype='float32')
  config.dataset.num_train_examples = 64
  config.batch_size = config.eval_batch_size = 8
  config.total_steps = 4
  config.optimizer.warmup_steps = 1
  config.update(log_every_steps=2, eval_every_steps=4, checkpoint_every_steps=4)
  config.sparsity.alpha = 0.1
