"""Export a trained run as an exactly N:M model file, load one, evaluate one (the library behind
`python -m pgf_sparsity.export`). The format follows the output's extension (model_files.py)."""
import json
import os
from typing import Any, Dict, Tuple

import numpy as np
from etils import epath

from pgf_sparsity.formats import file_paths
from pgf_sparsity.formats import model_files
from pgf_sparsity.formats import tensor_cores as tensor_cores_lib
from pgf_sparsity.sparsity import tree_paths


def _run_config(workdir: epath.Path):
  if not (workdir / 'config.json').exists() or not (workdir / 'run_info.json').exists():
    raise FileNotFoundError(f'{str(workdir)!r} holds no training run (no config.json / run_info.json).')
  from pgf_sparsity import config_lib  # pylint: disable=g-import-not-at-top
  return config_lib.complete(json.loads((workdir / 'config.json').read_text()))


def _check_output(output: epath.Path, overwrite: bool) -> None:
  if output.exists() and not overwrite:
    raise ValueError(f'{str(output)!r} exists; pass --overwrite to replace it.')
  writable = file_paths.is_url(output) or os.access(str(output.parent), os.W_OK)  # permission bits: local only
  if not output.parent.is_dir() or not writable:
    raise ValueError(f'cannot write {str(output)!r}: {str(output.parent)!r} is not a writable directory.')


OUTPUTS = ('.safetensors', '.npz', '/')


def _check_format(output: str) -> None:
  """The output names its format: a known extension, or a trailing '/' for a directory."""
  if not output.endswith(OUTPUTS):
    raise ValueError(f'--output {output!r} names no format: end it with .safetensors (dense with zeros, or '
                     "--packed), .npz (packed), or '/' for a directory of Flax parameters (orbax).")


def _cast(flat, dtype: str):
  """The parameters in `dtype` (or as they are); a dtype that cannot hold a value is an error."""
  if not dtype:
    return flat
  if dtype not in model_files.DTYPES:
    raise ValueError(f'--dtype must be one of {model_files.DTYPES}, got {dtype!r}.')
  out = {}
  for path, array in flat.items():
    with np.errstate(over='ignore'):  # overflow is reported below, naming the parameter
      out[path] = array.astype(np.dtype(dtype))
    if np.isfinite(array).all() and not np.isfinite(out[path].astype(np.float32)).all():
      raise ValueError(f'{dtype} cannot hold the values of {path} (largest magnitude '
                       f'{float(np.abs(array).max()):.4g}); export in a wider dtype.')
  return out


def hardened_parameters(workdir: epath.Path, config) -> Tuple[Dict[str, np.ndarray], Dict[str, Dict[str, Any]], int]:
  """(dense parameters with exact zeros at pruned weights, {kernel path: its N:M}, step) of the newest
  good checkpoint of a run."""
  import jax  # pylint: disable=g-import-not-at-top
  from pgf_sparsity.training import checkpoints, experiment  # pylint: disable=g-import-not-at-top
  from pgf_sparsity.data import DataSpec  # pylint: disable=g-import-not-at-top
  from pgf_sparsity.sparsity import Recipe  # pylint: disable=g-import-not-at-top
  exp = experiment.build(config, DataSpec.load(workdir), Recipe.from_config(config.sparsity))
  ckpt = checkpoints.Checkpointer(workdir, config.keep_checkpoints)
  if ckpt.latest_step() is None:
    raise FileNotFoundError(f'{str(workdir)!r} has no checkpoint to export.')
  state, step = ckpt.restore_latest_good(exp.abstract_state())
  ckpt.close()
  plan = exp.recipe.final_plan()
  flat = {p: np.asarray(a) for p, a in tree_paths.flatten(jax.device_get(state.params)).items()}
  masks = tree_paths.flatten(jax.device_get(exp.recipe.masks(state.params, plan))) if plan.sparse else {}
  sparse = {}
  for path, mask in masks.items():
    n, m = exp.recipe.pattern_of(path, plan)
    target, axes = exp.recipe.kernels[path]
    flat[path] = np.where(mask, flat[path], np.zeros((), flat[path].dtype))
    sparse[path] = {'n': n, 'm': m, 'axes': list(axes), 'in_ndim': target.in_ndim,
                    'group_axis': exp.recipe.recipe.group_axis}
  return flat, sparse, int(step)


def export(workdir: str, output: str, *, packed: bool = False, dtype: str = '', overwrite: bool = False,
           tensor_cores: bool = False) -> Dict[str, Any]:
  """Writes the newest good checkpoint of `workdir` as an N:M model file; returns a size report.
  `tensor_cores` stores qualifying 2:4 kernels in the form of NVIDIA's sparse tensor cores (packed files).
  Either path may be a URL (file_paths.py)."""
  _check_format(output)
  workdir, output_path = file_paths.absolute(workdir), file_paths.absolute(output)
  config = _run_config(workdir)
  _check_output(output_path, overwrite)
  if packed and not output.endswith('.safetensors'):
    raise ValueError('--packed chooses the packed variant of .safetensors; .npz is always packed.')
  if tensor_cores and not (output.endswith('.npz') or packed):
    raise ValueError('--tensor_cores needs a packed output: .npz, or .safetensors with --packed.')
  flat, sparse, step = hardened_parameters(workdir, config)
  flat = _cast(flat, dtype)
  if tensor_cores:
    for path, layer in sparse.items():
      if tensor_cores_lib.qualifies(flat[path].shape, layer['n'], layer['m'], layer['axes'], layer['in_ndim']):
        layer['encoding'] = 'nvidia_2_4'
  meta = model_files.describe(flat, sparse, step=step, config=config.to_dict())
  if output_path.is_dir():
    output_path.rmtree()
  elif output_path.exists():
    output_path.unlink()
  model_files.write(str(output_path), flat, meta, packed)
  return {'step': step, 'sparse_kernels': len(sparse), 'dense_bytes': sum(a.nbytes for a in flat.values()),
          'file_bytes': _size(output_path)}


def _size(path: epath.Path) -> int:
  if path.is_dir():
    return sum((root / name).stat().length for root, _, names in path.walk() for name in names)
  return path.stat().length


def load(path: str) -> Tuple[Dict[str, Any], Dict[str, Any]]:
  """A model file of any format, as Flax parameters.

  Args:
    path: a file written by `export` (.npz, .safetensors, or an orbax directory).

  Returns:
    (nested dense parameters with exact zeros at pruned weights, metadata).
  """
  flat, meta = model_files.read(path)
  return tree_paths.nest(flat), meta


def evaluation_inputs(path: str):
  """(Experiment, data pipeline, parameters on its device) of the run that made a model file."""
  import jax  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from pgf_sparsity.training import experiment  # pylint: disable=g-import-not-at-top
  flat, meta = model_files.read(path)
  exp, data = experiment.from_config(ml_collections.ConfigDict(meta['config']))
  abstract = tree_paths.flatten(exp.abstract_state().params)
  if set(abstract) != set(flat):
    raise ValueError(f'{path!r} does not hold the parameters of its config\'s model.')
  params = tree_paths.nest({p: jax.device_put(np.asarray(flat[p], abstract[p].dtype), exp.replicated) for p in flat})
  return exp, data, params


def evaluate(path: str, inference: str = 'auto') -> Dict[str, float]:
  """The evaluation of the run that made a model file, on the file's weights.

  Args:
    path: a file written by `export`; its metadata holds the run's config, which names the data.
    inference: 'auto' computes N:M layers from their packed form where that is faster
      (pgf_sparsity.inference.packed_layers.automatic), 'sparse' everywhere it can, 'dense' never.

  Returns:
    The evaluation metrics, as the run computes them.
  """
  from pgf_sparsity.inference import packed_layers  # pylint: disable=g-import-not-at-top
  from pgf_sparsity.training import steps  # pylint: disable=g-import-not-at-top
  exp, data, params = evaluation_inputs(path)
  packed = None if inference == 'dense' else packed_layers.from_file(path, inference)
  return steps.CompiledSteps(exp, packed).evaluate(params, data)
