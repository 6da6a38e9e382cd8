"""Helpers for config files: big_vision-style `file.py:key=value,flag` arguments, the sparsity block built
from them, and the defaults of the training loop that every config shares."""
import importlib.util
import math
import os
from typing import Any, Dict

import ml_collections

from pgf_sparsity.models import t5
from pgf_sparsity.sparsity import schedules
from pgf_sparsity.training import sharding

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


def sparsity_config(recipe: str, targets: Dict[str, Any], *, flow: str = 'decayed', alpha: float = 0.0,
                    dense_fraction: float = 0.0, finetune_fraction: float = 0.0, srste_lambda: float = 2e-4,
                    mask_update_every: int = 1) -> ml_collections.ConfigDict:
  """targets: {name: (regex, 'n:m' or None)}; entries without a pattern are left dense."""
  config = ml_collections.ConfigDict()
  config.recipe = recipe
  config.flow = flow
  config.alpha = alpha
  config.srste_lambda = srste_lambda
  config.group_axis = 'in'
  config.dense_fraction = dense_fraction
  config.finetune_fraction = finetune_fraction
  config.mask_update_every = mask_update_every
  config.targets = {}
  for name, (regex, pattern) in targets.items():
    nm = parse_pattern(pattern)
    if nm:
      config.targets[name] = {'regex': regex, 'n': nm[0], 'm': nm[1]}
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


def set_loop_defaults(config: ml_collections.ConfigDict, *, log_every: int, eval_every: int,
                      checkpoint_every: int, keep_checkpoints: int = 2,
                      runlocal: bool = False) -> ml_collections.ConfigDict:
  """The training-loop keys every config has, with the defaults they share; returns `config`. With
  `runlocal` (a seconds-long smoke run of config.total_steps steps): log every 10 steps, evaluate and
  checkpoint at the end."""
  if runlocal:
    log_every, eval_every, checkpoint_every = 10, config.total_steps, config.total_steps
  config.log_every_steps = log_every
  config.eval_every_steps = eval_every
  config.checkpoint_every_steps = checkpoint_every
  config.keep_checkpoints = keep_checkpoints
  config.diagnostics_every_steps = 0  # > 0: the gradient-noise diagnostic every that many steps
  config.nonfinite = 'stop'  # or 'skip': drop updates with a non-finite loss or gradient
  config.mesh = dict(sharding.DEFAULT)  # {'data': -1, 'fsdp': k}: FSDP over k devices (sharding.py)
  config.init = dict(path='', format='workdir', masks='reset', reset='')  # start from trained parameters (initialise.py)
  config.loss = 'softmax'
  config.label_smoothing = 0.0
  config.mixup_alpha = 0.0
  config.eval_batch_size = None  # None: the training batch size
  return config


def optimizer(learning_rate: float, *, warmup_steps=None, warmup_epochs=None, cooldown_epochs=None,
              init_learning_rate: float = 0.0, min_learning_rate: float = 0.0, weight_decay: float = 0.0,
              b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, grad_clip_norm: float = 1.0) -> Dict[str, Any]:
  """The optimizer block (AdamW on warmup-cosine, see pgf_sparsity/optim.py); warmup in steps or epochs."""
  block = dict(learning_rate=learning_rate, init_learning_rate=init_learning_rate,
               min_learning_rate=min_learning_rate, weight_decay=weight_decay, b1=b1, b2=b2, eps=eps,
               grad_clip_norm=grad_clip_norm)
  extra = dict(warmup_steps=warmup_steps, warmup_epochs=warmup_epochs, cooldown_epochs=cooldown_epochs)
  block.update({k: v for k, v in extra.items() if v is not None})
  return block


def set_t5_optimizer(config: ml_collections.ConfigDict, name: str, *, adafactor: Dict[str, Any],
                     adamw: Dict[str, Any]) -> None:
  """T5X's optimizer choice: Adafactor (`adafactor`: learning_rate, schedule, warmup_steps; no global-norm
  clipping, Adafactor clips its updates), or AdamW (the `adamw` block) with scaled attention logits, since
  T5's query-initialisation scaling is only equivalent under Adafactor."""
  if name not in ('adafactor', 'adamw'):
    raise ValueError(f"Config argument opt must be 'adafactor' or 'adamw', got {name!r}.")
  config.optimizer = (dict(name='adafactor', grad_clip_norm=0.0, **adafactor) if name == 'adafactor'
                      else dict(name='adamw', **adamw))
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
