"""Everything a config says, and the workdir, checked before any data is loaded or anything compiled.

Bad input raises ValueError with one message that names the key; nothing is written.
"""
import json
import math
import os

import jax
from etils import epath

from pgf_sparsity import config_lib
from pgf_sparsity import models
from pgf_sparsity.formats import file_paths
from pgf_sparsity.sparsity import Recipe
from pgf_sparsity.training import initialise
from pgf_sparsity.training import optim
from pgf_sparsity.training import sharding

# Keys that may change between a run and its resumption: they do not change what is trained.
RESUMABLE_CHANGES = {'log_every_steps', 'eval_every_steps', 'checkpoint_every_steps', 'keep_checkpoints',
                     'eval_batch_size', 'diagnostics_every_steps', 'mesh', 'beam_size', 'length_penalty'}
NONFINITE_POLICIES = ('stop', 'skip')
LOSSES = ('softmax', 'sigmoid')
LOSS_NORMALIZERS = ('tokens', 'padded')
SEQ2SEQ_DATASETS = ('shakespeare', 'tfds_text')


def _number(value, key: str, *, low: float = -math.inf, high: float = math.inf, low_open: bool = False,
            high_open: bool = False) -> None:
  """A finite number within [low, high] (or open at either end)."""
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
    raise ValueError(f'config.{key} must be a finite number, got {value!r}.')
  if value < low or value > high or (low_open and value == low) or (high_open and value == high):
    interval = f'{"(" if low_open else "["}{low}, {high}{")" if high_open else "]"}'
    raise ValueError(f'config.{key} must lie in {interval}, got {value!r}.')


def _integer(value, key: str, minimum: int) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    raise ValueError(f'config.{key} must be an integer >= {minimum}, got {value!r}.')


def _changed(block, *keys, block_name: str = '') -> list:
  """The keys among `keys` whose value differs from its default (config_lib's table)."""
  return [k for k in keys if block[k] != config_lib.default_of(block_name + k)]


def check_config(config) -> Recipe:
  """Validates a config completed by config_lib.complete (unknown keys are refused there); returns the
  parsed sparsity recipe."""
  _check_loop(config)
  _check_decoding(config)
  _check_optimizer(config.optimizer)
  models.build(config.model, output_size=1)  # unknown model names, keys and dtypes (the size comes later)
  return Recipe.from_config(config.sparsity)


def _check_loop(config) -> None:
  if config.loss not in LOSSES:
    raise ValueError(f'config.loss must be one of {LOSSES}, got {config.loss!r}.')
  for key in ('batch_size', 'log_every_steps', 'eval_every_steps', 'checkpoint_every_steps', 'keep_checkpoints'):
    _integer(config[key], key, 1)
  _integer(config.diagnostics_every_steps, 'diagnostics_every_steps (0: off)', 0)
  _integer(config.seed, 'seed', 0)
  if config.eval_batch_size is not None:
    _integer(config.eval_batch_size, 'eval_batch_size', 1)
  if (config.total_steps is None) == (config.num_epochs is None):
    raise ValueError('Give exactly one of config.total_steps and config.num_epochs.')
  if config.total_steps is not None:
    _integer(config.total_steps, 'total_steps', 1)
  else:
    _number(config.num_epochs, 'num_epochs', low=0.0, low_open=True)
  sharding.mesh_shape(config.mesh, jax.device_count())
  initialise.check(config.init)
  if config.batch_size % jax.device_count():
    raise ValueError(f'config.batch_size {config.batch_size} must be divisible by the {jax.device_count()} '
                     'devices.')
  _number(config.label_smoothing, 'label_smoothing', low=0.0, high=1.0, high_open=True)
  _number(config.mixup_alpha, 'mixup_alpha', low=0.0)
  _check_image_augmentation(config)
  if config.nonfinite not in NONFINITE_POLICIES:
    raise ValueError(f'config.nonfinite must be one of {NONFINITE_POLICIES}, got {config.nonfinite!r}.')
  if _changed(config, 'z_loss', 'loss_normalizer'):
    if config.dataset.name not in SEQ2SEQ_DATASETS:
      raise ValueError('config.z_loss and config.loss_normalizer apply to the sequence-to-sequence tasks only.')
    _number(config.z_loss, 'z_loss', low=0.0)
    if config.loss_normalizer not in LOSS_NORMALIZERS:
      raise ValueError(f'config.loss_normalizer must be one of {LOSS_NORMALIZERS}, got {config.loss_normalizer!r}.')


def _check_image_augmentation(config) -> None:
  """CutMix, Mixup switching and random erasing (augment.py), for image classification only."""
  keys = _changed(config, 'cutmix_alpha', 'mixup_switch_prob', 'random_erasing')
  if not keys:
    return
  if config.dataset.name in SEQ2SEQ_DATASETS:
    raise ValueError(f'config.{keys[0]} applies to image classification only.')
  _number(config.cutmix_alpha, 'cutmix_alpha', low=0.0)
  _number(config.mixup_switch_prob, 'mixup_switch_prob', low=0.0, high=1.0)
  _number(config.random_erasing, 'random_erasing', low=0.0, high=1.0)


def _check_decoding(config) -> None:
  """Beam search settings of the tasks evaluated by decoding (decoding.py)."""
  if not _changed(config, 'beam_size', 'length_penalty'):
    return
  if config.dataset.name not in SEQ2SEQ_DATASETS:
    raise ValueError('config.beam_size and config.length_penalty apply to the sequence-to-sequence tasks only.')
  _integer(config.beam_size, 'beam_size', 1)
  _number(config.length_penalty, 'length_penalty', low=0.0)


def _check_optimizer(opt) -> None:
  name, schedule = opt.name, opt.schedule
  if name not in optim.OPTIMIZERS:
    raise ValueError(f'config.optimizer.name must be one of {optim.OPTIMIZERS}, got {name!r}.')
  if schedule not in optim.SCHEDULES:
    raise ValueError(f'config.optimizer.schedule must be one of {optim.SCHEDULES}, got {schedule!r}.')
  for key, applies, what in ((optim.ADAMW_ONLY, name == 'adamw', 'AdamW'),
                             (optim.COSINE_ONLY, schedule == 'cosine', 'the cosine schedule')):
    given = sorted(_changed(opt, *key, block_name='optimizer.'))
    if given and not applies:
      raise ValueError(f'config.optimizer {given} belong to {what}, which this config does not use.')
  _number(opt.learning_rate, 'optimizer.learning_rate', low=0.0, low_open=True)
  for key in ('init_learning_rate', 'min_learning_rate', 'weight_decay', 'grad_clip_norm', 'warmup_epochs',
              'cooldown_epochs'):
    if opt[key] is not None:
      _number(opt[key], f'optimizer.{key}', low=0.0)
  for key in ('b1', 'b2'):
    _number(opt[key], f'optimizer.{key}', low=0.0, high=1.0, high_open=True)
  _number(opt.eps, 'optimizer.eps', low=0.0, low_open=True)
  if opt.warmup_steps is not None:
    _integer(opt.warmup_steps, 'optimizer.warmup_steps', 0)
    if opt.warmup_epochs is not None:
      raise ValueError('Give one of optimizer.warmup_steps and optimizer.warmup_epochs.')


def check_workdir(workdir: str) -> epath.Path:
  """The workdir, which must be named, and be or be creatable as a writable directory, as an absolute
  epath.Path (a `gs://...` workdir stays remote: every file of the run goes through this path)."""
  if not workdir or not str(workdir).strip():
    raise ValueError('--workdir is empty; name a directory for checkpoints and metrics.')
  path = file_paths.absolute(workdir)
  remote = file_paths.is_url(path)  # permission bits exist on local paths only
  probe = path
  while not probe.exists() and probe.parent != probe:
    probe = probe.parent
  if not probe.is_dir() or (not remote and not os.access(str(probe), os.W_OK)):
    raise ValueError(f'workdir {workdir!r} cannot be created or written ({str(probe)!r} is not a writable '
                     'directory).')
  return path


def check_resumable(config, workdir: epath.Path, force_resume: bool) -> None:
  """A run the workdir holds must have the same config (keys in RESUMABLE_CHANGES aside), unless
  `force_resume`."""
  saved_path = workdir / 'config.json'
  if force_resume or not saved_path.exists():
    return
  saved = json.loads(saved_path.read_text())
  current = json.loads(config.to_json_best_effort())
  differing = sorted(k for k in set(saved) | set(current)
                     if k not in RESUMABLE_CHANGES and saved.get(k) != current.get(k))
  if differing:
    raise ValueError(f'workdir {str(workdir)!r} holds a run with another config (differs in {differing}); use a new '
                     'workdir, or pass --force_resume to continue it with this config.')

