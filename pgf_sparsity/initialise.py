"""Starting a run from trained parameters (pretrain, then fine-tune):

  config.init = {'path': DIR_OR_FILE, 'format': 'workdir', 'masks': 'reset'}

  format  'workdir': another run's newest good checkpoint (e.g. the C4 pretraining run for GLUE or WMT);
          'hf_t5':   Hugging Face T5 v1.1 weights; 'big_vision': a ViT .npz of big_vision or AugReg
          (converters.py).
  masks   'reset': the new run's recipe starts from all-kept masks; 'keep' (format 'workdir' only): the
          source run's masks too, i.e. its sparsity state.

Only a fresh run is initialised this way; a resumed one continues from its own checkpoint. The step and
the optimizer state always start afresh. Every parameter of the model must come from the source, with its
shape: a missing, extra or misshapen one fails naming the parameter, before anything is trained.
"""
from typing import Any, Dict, Mapping, Optional, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from pgf_sparsity import converters
from pgf_sparsity import paths
from pgf_sparsity import tree_paths

KEYS = {'path', 'format', 'masks'}
FORMATS = ('workdir',) + tuple(converters.FORMATS)
MASKS = ('reset', 'keep')


def check(init: Optional[Mapping[str, Any]]) -> None:
  """config.init, validated before any data is read (the source must exist)."""
  if not init or not init.get('path'):
    return
  unknown = set(init) - KEYS
  if unknown:
    raise ValueError(f'Unknown config.init keys {sorted(unknown)}; known: {sorted(KEYS)}.')
  if init.get('format', 'workdir') not in FORMATS:
    raise ValueError(f'config.init.format must be one of {FORMATS}, got {init.get("format")!r}.')
  if init.get('masks', 'reset') not in MASKS:
    raise ValueError(f'config.init.masks must be one of {MASKS}, got {init.get("masks")!r}.')
  if init.get('masks') == 'keep' and init.get('format', 'workdir') != 'workdir':
    raise ValueError("config.init.masks='keep' needs format 'workdir' (only a run's checkpoint holds masks).")
  if not epath.Path(init['path']).exists():
    raise FileNotFoundError(f'config.init.path {init["path"]!r} does not exist.')


def _from_workdir(workdir: str) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
  """(params, masks) of a run's newest checkpoint, restored as saved (its config may differ from ours)."""
  directory = paths.absolute(workdir) / 'checkpoints'
  with ocp.CheckpointManager(directory, item_names=('state', 'digest')) as manager:
    step = manager.latest_step()
    if step is None:
      raise FileNotFoundError(f'config.init.path {workdir!r} holds no checkpoint.')
    state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))['state']
  masks = {p: np.asarray(m) for p, m in tree_paths.flatten(state.get('masks') or {}).items()}
  return {p: np.asarray(a) for p, a in tree_paths.flatten(state['params']).items()}, masks


def _checked(source: Dict[str, np.ndarray], target, what: str) -> Dict[str, np.ndarray]:
  """`source` for exactly the leaves of `target` (same paths and shapes), in the target's dtypes."""
  flat = tree_paths.flatten(target)
  missing, extra = sorted(set(flat) - set(source)), sorted(set(source) - set(flat))
  if missing:
    raise ValueError(f'config.init: {what} lacks parameter {missing[0]} of the model ({len(missing)} missing).')
  if extra:
    raise ValueError(f'config.init: {what} holds parameter {extra[0]}, which the model lacks ({len(extra)} extra).')
  for path, leaf in flat.items():
    if tuple(source[path].shape) != tuple(leaf.shape):
      raise ValueError(f'config.init: parameter {path} has shape {tuple(source[path].shape)} in {what}, '
                       f'the model needs {tuple(leaf.shape)}.')
  return {path: np.asarray(source[path], leaf.dtype) for path, leaf in flat.items()}


def initialised_state(init: Mapping[str, Any], exp, state):
  """`state` (fresh) with the parameters (and, with masks='keep', the masks) of `init`, placed as the
  state's own shardings; the optimizer state is initialised anew for them."""
  fmt, what = init.get('format', 'workdir'), f'{init["path"]!r}'
  masks = None
  if fmt == 'workdir':
    params, source_masks = _from_workdir(init['path'])
    if init.get('masks', 'reset') == 'keep':
      masks = _checked(source_masks, state.masks, what + "'s masks")
  else:
    params = converters.FORMATS[fmt](init['path'])
  def place(flat, tree, shardings):
    where = tree_paths.flatten(shardings)
    return tree_paths.unflatten_like(tree, {p: jax.device_put(a, where[p]) for p, a in flat.items()})

  new_params = place(_checked(params, state.params, what), state.params, exp.state_sharding.params)
  new_masks = place(masks, state.masks, exp.state_sharding.masks) if masks is not None else state.masks
  opt_state = jax.jit(exp.tx.init, out_shardings=exp.state_sharding.opt_state)(new_params)
  return state.replace(params=new_params, masks=new_masks, opt_state=opt_state)
