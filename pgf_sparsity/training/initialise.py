"""Starting a run from trained parameters (pretrain, then fine-tune):

  config.init = {'path': DIR_OR_FILE, 'format': 'workdir', 'masks': 'reset', 'reset': ''}

  format  'workdir': another run's newest good checkpoint (e.g. the C4 pretraining run for GLUE or WMT);
          'hf_t5':   Hugging Face T5 v1.1 weights; 't5x': a T5X checkpoint of T5 v1.1;
          'big_vision': a ViT .npz of big_vision or AugReg (converters.py).
  masks   'reset': the new run's recipe starts from all-kept masks; 'keep' (format 'workdir' only): the
          source run's masks too, i.e. its sparsity state.
  reset   a regular expression: parameters whose path matches keep the new model's own initialisation and
          need not be in the source (e.g. 'head' to fine-tune on another label set, as big_vision does).

A ViT position embedding whose token grid differs from the model's (another resolution or patch size) is
resampled as big_vision does (`resample_posemb`: order-1 spline zoom of the grid; class-token rows kept).

Only a fresh run is initialised this way; a resumed one continues from its own checkpoint. The step and
the optimizer state always start afresh. Every other parameter of the model must come from the source, with
its shape: a missing, extra or misshapen one fails naming the parameter, before anything is trained.
"""
from typing import Any, Dict, Mapping, Tuple

import re

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from pgf_sparsity.formats import converters
from pgf_sparsity.formats import file_paths
from pgf_sparsity.sparsity import tree_paths
from pgf_sparsity.training import checkpoints

FORMATS = ('workdir',) + tuple(converters.FORMATS)
MASKS = ('reset', 'keep')


def check(init) -> None:
  """config.init (completed by config_lib), validated before any data is read (the source must exist)."""
  if not init.path:
    return
  if init.format not in FORMATS:
    raise ValueError(f'config.init.format must be one of {FORMATS}, got {init.format!r}.')
  if init.masks not in MASKS:
    raise ValueError(f'config.init.masks must be one of {MASKS}, got {init.masks!r}.')
  if init.masks == 'keep' and init.format != 'workdir':
    raise ValueError("config.init.masks='keep' needs format 'workdir' (only a run's checkpoint holds masks).")
  try:
    re.compile(init.reset or '')
  except re.error as e:
    raise ValueError(f'config.init.reset {init.reset!r} is not a regular expression ({e}).') from None
  if not epath.Path(init.path).exists():
    raise FileNotFoundError(f'config.init.path {init.path!r} does not exist.')


def _from_workdir(workdir: str) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
  """(params, masks) of a run's newest checkpoint, restored as saved (its config may differ from ours)."""
  directory = file_paths.absolute(workdir) / 'checkpoints'
  with ocp.CheckpointManager(directory, item_names=('state', 'digest')) as manager:
    step = manager.latest_step()
    if step is None:
      raise FileNotFoundError(f'config.init.path {workdir!r} holds no checkpoint.')
    checkpoints.quiet_abandoned_orbax_work()
    state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))['state']
  masks = {p: np.asarray(m) for p, m in tree_paths.flatten(state.get('masks') or {}).items()}
  return {p: np.asarray(a) for p, a in tree_paths.flatten(state['params']).items()}, masks


def resample_pos_embedding(source: np.ndarray, tokens: int) -> np.ndarray:
  """A (1, T, c) position embedding resampled to `tokens` rows: the square patch grid zoomed (order-1
  spline, big_vision's `resample_posemb`), the leading extra rows (a class token) kept."""
  grid_old, grid_new = int(np.sqrt(source.shape[1])), int(np.sqrt(tokens))
  extra = source.shape[1] - grid_old ** 2
  if extra != tokens - grid_new ** 2 or extra < 0:
    raise ValueError(f'cannot resample a position embedding of {source.shape[1]} tokens to {tokens}: the '
                     'class-token rows differ')
  grid = source[0, extra:].reshape(grid_old, grid_old, -1)
  zoom = grid_new / grid_old
  import scipy.ndimage  # pylint: disable=g-import-not-at-top  (only for this, which few runs need)
  grid = scipy.ndimage.zoom(grid, (zoom, zoom, 1), order=1)
  return np.concatenate([source[0, :extra], grid.reshape(grid_new ** 2, -1)])[None]


def _checked(source: Dict[str, np.ndarray], target, what: str, reset: str = '') -> Dict[str, np.ndarray]:
  """`source` for the leaves of `target` (same paths and shapes, in the target's dtypes), except those whose
  path matches `reset`, which keep the target's values."""
  every = tree_paths.flatten(target)
  flat = {p: leaf for p, leaf in every.items() if not (reset and re.search(reset, p))}
  missing, extra = sorted(set(flat) - set(source)), sorted(set(source) - set(every))
  if missing:
    raise ValueError(f'config.init: {what} lacks parameter {missing[0]} of the model ({len(missing)} missing).')
  if extra:
    raise ValueError(f'config.init: {what} holds parameter {extra[0]}, which the model lacks ({len(extra)} extra).')
  out = {}
  for path, leaf in flat.items():
    array = source[path]
    if path.endswith('pos_embedding') and array.ndim == 3 and array.shape[1] != leaf.shape[1]:
      array = resample_pos_embedding(array, leaf.shape[1])
    if tuple(array.shape) != tuple(leaf.shape):
      raise ValueError(f'config.init: parameter {path} has shape {tuple(array.shape)} in {what}, '
                       f'the model needs {tuple(leaf.shape)}.')
    out[path] = np.asarray(array, leaf.dtype)
  return out


def initialised_state(init: Mapping[str, Any], exp, state):
  """`state` (fresh) with the parameters (and, with masks='keep', the masks) of `init`, placed as the
  state's own shardings; the optimizer state is initialised anew for them."""
  fmt, what = init.format, f'{init.path!r}'
  masks = None
  if fmt == 'workdir':
    params, source_masks = _from_workdir(init.path)
    if init.masks == 'keep':
      masks = _checked(source_masks, state.masks, what + "'s masks", init.reset or '')
  else:
    params = converters.FORMATS[fmt](init.path)
  def place(flat, tree, shardings):
    where, fresh = tree_paths.flatten(shardings), tree_paths.flatten(tree)
    return tree_paths.unflatten_like(tree, {p: jax.device_put(flat[p], where[p]) if p in flat else fresh[p]
                                            for p in fresh})

  new_params = place(_checked(params, state.params, what, init.reset or ''), state.params,
                     exp.state_sharding.params)
  new_masks = place(masks, state.masks, exp.state_sharding.masks) if masks is not None else state.masks
  opt_state = jax.jit(exp.tx.init, out_shardings=exp.state_sharding.opt_state)(new_params)
  return state.replace(params=new_params, masks=new_masks, opt_state=opt_state)
