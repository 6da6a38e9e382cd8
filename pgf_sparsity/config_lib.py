"""Helpers for config files: big_vision-style `file.py:key=value,flag` arguments and sparsity blocks."""
import math
from typing import Any, Dict

import ml_collections


def parse_arg(arg: str, **defaults) -> ml_collections.ConfigDict:
  """'recipe=static,ff=1:8,runlocal' -> defaults updated, typed like the default (bare key = True)."""
  out = dict(defaults)
  for item in filter(None, (arg or '').split(',')):
    key, sep, value = item.partition('=')
    if key not in out:
      raise ValueError(f'Unknown config argument {key!r}; known: {sorted(out)}.')
    default = out[key]
    if not sep:
      out[key] = True
    elif isinstance(default, bool):
      if value.lower() not in ('true', 'false', '1', '0'):
        raise ValueError(f'Config argument {key} needs true/false, got {value!r}.')
      out[key] = value.lower() in ('true', '1')
    elif isinstance(default, int):
      out[key] = int(value)
    elif isinstance(default, float):
      out[key] = float(value)
    else:
      out[key] = value
  return ml_collections.ConfigDict(out)


def parse_pattern(text: str):
  """'1:8' -> (1, 8); '' or 'none' -> None."""
  if not text or text.lower() == 'none':
    return None
  try:
    n, m = (int(v) for v in text.split(':'))
  except ValueError:
    raise ValueError(f'An N:M pattern looks like "1:8", got {text!r}.') from None
  return n, m


def sparsity_config(recipe: str, targets: Dict[str, Any], *, gradient_flow: str = 'decayed',
                    alpha: float = 0.0, dense_fraction: float = 0.0, finetune_fraction: float = 0.0,
                    srste_lambda: float = 2e-4, mask_update_every: int = 1) -> ml_collections.ConfigDict:
  """targets: {name: (regex, 'n:m' or None)}; entries without a pattern are left dense."""
  config = ml_collections.ConfigDict()
  config.recipe = recipe
  config.gradient_flow = gradient_flow
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
  return sparsity_config(a.recipe, {name: (regex, a[name]) for name, regex in targets.items()},
                         gradient_flow=a.flow, alpha=alpha, dense_fraction=a.dense, finetune_fraction=a.finetune)


def decay_alpha(a, total_steps: int) -> float:
  """The alpha argument, or (when 0) the one that brings beta to 0.01 at 80% of the sparse phase."""
  sparse_steps = total_steps * (1.0 - a.dense - a.finetune)
  return a.alpha or math.log(100.0) / max(0.8 * sparse_steps, 1.0)


VIT_TARGETS = {
    'ff': r'.*/mlp/fc[12]/kernel',
    'qkv': r'.*/attention/(query|key|value)/kernel',
    'attn_out': r'.*/attention/out/kernel',
}

# T5 layer kinds; the stacks differ by prefix (encoder_layers_i, decoder_layers_i).
T5_LAYERS = {
    'ff': r'mlp/(wi_0|wi_1|wo)/kernel',
    'qkv': r'\w*attention/(query|key|value)/kernel',
    'attn_out': r'\w*attention/out/kernel',
}
T5_TARGETS = {name: r'(encoder|decoder)_layers_\d+/' + regex for name, regex in T5_LAYERS.items()}


def t5_sparsity_from_args(a, alpha: float) -> ml_collections.ConfigDict:
  """Like sparsity_from_args for T5: arguments ff, qkv, attn_out set encoder and decoder together, and
  dec_ff, dec_qkv, dec_attn_out (when not 'same') give the decoder its own pattern."""
  targets = {}
  for name, regex in T5_LAYERS.items():
    decoder = a[f'dec_{name}']
    if decoder == 'same':
      targets[name] = (r'(encoder|decoder)_layers_\d+/' + regex, a[name])
    else:
      targets[f'enc_{name}'] = (r'encoder_layers_\d+/' + regex, a[name])
      targets[f'dec_{name}'] = (r'decoder_layers_\d+/' + regex, decoder)
  return sparsity_config(a.recipe, targets, gradient_flow=a.flow, alpha=alpha, dense_fraction=a.dense,
                         finetune_fraction=a.finetune)


T5_ARGS = dict(dec_ff='same', dec_qkv='same', dec_attn_out='same')
