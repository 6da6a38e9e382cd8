"""Export a trained run as an exactly N:M model in packed form, and load it back.

  .venv/bin/python -m pgf_sparsity.export --workdir=DIR --output=model.npz
  .venv/bin/python -m pgf_sparsity.export --verify=model.npz

The file is an .npz: for every sparse kernel the kept values grouped as (groups, N, rest) and their
positions within the group (uint8, or uint16 for M > 256), i.e. N/M of the values plus the index (SPEC
section 10); every other parameter dense. 'meta' holds JSON: format, patterns, shapes and the run config.
`load` rebuilds the dense, hardened parameter tree (pruned weights exactly zero).
"""
import json
import os
import sys
import zipfile
from typing import Any, Dict, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from pgf_sparsity.sparsity import Recipe, nm
from pgf_sparsity import tree_paths

FORMAT = 'pgf_sparsity.nm_export.v1'


def pack(kernel: np.ndarray, mask: np.ndarray, n: int, m: int, axes) -> Tuple[np.ndarray, np.ndarray]:
  """Kept values (G, N, B) and their positions in the group (G, N, B), groups as in nm_mask."""
  groups, _ = nm.to_groups(jnp.asarray(kernel), tuple(axes), m)
  keep, _ = nm.to_groups(jnp.asarray(mask), tuple(axes), m)
  keep = np.asarray(keep)
  if not (keep.sum(axis=1) == n).all():
    raise ValueError(f'mask is not exactly {n}:{m}')
  # Positions of the kept entries in ascending order, N per group.
  order = np.argsort(~keep, axis=1, kind='stable')[:, :n, :]
  values = np.take_along_axis(np.asarray(groups), order, axis=1)
  return values, order.astype(np.uint8 if m <= 256 else np.uint16)


def unpack(values: np.ndarray, index: np.ndarray, shape, m: int, axes) -> np.ndarray:
  g, n, b = values.shape
  if index.shape != values.shape or index.max(initial=0) >= m:
    raise ValueError('index array does not match the values or points outside its group')
  dense = np.zeros((g, m, b), values.dtype)
  np.put_along_axis(dense, index.astype(np.int64), values, axis=1)
  _, restore = nm.to_groups(jnp.zeros(shape, values.dtype), tuple(axes), m)
  return np.asarray(restore(jnp.asarray(dense)))


def export(workdir: str, output: str) -> Dict[str, Any]:
  """Writes the newest good checkpoint of `workdir` as a packed N:M model; returns a size report."""
  from pgf_sparsity import checkpoints  # pylint: disable=g-import-not-at-top
  from pgf_sparsity import experiment  # pylint: disable=g-import-not-at-top
  from pgf_sparsity.data import DataSpec  # pylint: disable=g-import-not-at-top
  config_path = os.path.join(workdir, 'config.json')
  if not os.path.exists(config_path) or not os.path.exists(os.path.join(workdir, 'run_info.json')):
    raise FileNotFoundError(f'{workdir!r} holds no training run (no config.json / run_info.json).')
  out_dir = os.path.dirname(os.path.abspath(output))
  if not os.path.isdir(out_dir) or not os.access(out_dir, os.W_OK):
    raise ValueError(f'cannot write {output!r}: {out_dir!r} is not a writable directory.')
  with open(config_path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  exp = experiment.build(config, DataSpec.load(workdir), Recipe.from_config(config.sparsity))
  ckpt = checkpoints.Checkpointer(workdir, config.keep_checkpoints)
  if ckpt.latest_step() is None:
    raise FileNotFoundError(f'{workdir!r} has no checkpoint to export.')
  state, step = ckpt.restore_latest_good(exp.abstract_state())
  ckpt.close()
  params = tree_paths.flatten(jax.device_get(state.params))
  plan = exp.recipe.final_plan()
  masks = tree_paths.flatten(jax.device_get(exp.recipe.masks(state.params, plan))) if plan.sparse else {}
  arrays, patterns = {}, {}
  for path, value in params.items():
    if path in masks:
      n, m = exp.recipe.pattern_of(path, plan)
      axes = exp.recipe.kernels[path][1]
      values, index = pack(value, masks[path], n, m, axes)
      arrays[f'nm_values/{path}'], arrays[f'nm_index/{path}'] = values, index
      patterns[path] = {'n': n, 'm': m, 'axes': list(axes), 'shape': list(value.shape)}
    else:
      arrays[f'dense/{path}'] = np.asarray(value)
  meta = {'format': FORMAT, 'step': int(step), 'patterns': patterns, 'config': config.to_dict()}
  arrays['meta'] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
  with open(output, 'wb') as f:
    np.savez(f, **arrays)
  dense_bytes = sum(v.nbytes for v in params.values())
  packed_bytes = sum(v.nbytes for k, v in arrays.items() if k != 'meta')
  return {'step': int(step), 'sparse_kernels': len(patterns), 'dense_bytes': dense_bytes,
          'packed_bytes': packed_bytes}


def load(path: str) -> Tuple[Dict[str, Any], Dict[str, Any]]:
  """(nested dense parameters with exact zeros at pruned weights, meta) from an exported file."""
  try:
    with np.load(path, allow_pickle=False) as data:
      arrays = {k: data[k] for k in data.files}
  except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
    raise ValueError(f'{path!r} is not a readable pgf_sparsity export (truncated or not an .npz: '
                     f'{type(e).__name__}).') from None
  if 'meta' not in arrays:
    raise ValueError(f'{path!r} is not a pgf_sparsity export (no meta record).')
  try:
    meta = json.loads(arrays.pop('meta').tobytes().decode())
  except (UnicodeDecodeError, json.JSONDecodeError):
    raise ValueError(f'{path!r} has a corrupted meta record.') from None
  if meta.get('format') != FORMAT:
    raise ValueError(f'{path!r} has format {meta.get("format")!r}; this version reads {FORMAT}.')
  flat = {k[len('dense/'):]: v for k, v in arrays.items() if k.startswith('dense/')}
  for p, spec in meta['patterns'].items():
    try:
      values, index = arrays[f'nm_values/{p}'], arrays[f'nm_index/{p}']
    except KeyError:
      raise ValueError(f'{path!r} lacks the packed arrays of {p}.') from None
    flat[p] = unpack(values, index, tuple(spec['shape']), spec['m'], spec['axes'])
  return tree_paths.nest(flat), meta


def main(argv=None):
  from absl import app, flags  # pylint: disable=g-import-not-at-top,multiple-import-on-one-line
  flags.DEFINE_string('workdir', None, 'Training workdir to export.')
  flags.DEFINE_string('output', None, 'Output .npz file.')
  flags.DEFINE_string('verify', None, 'Load this export file and report it.')

  def run(argv):
    del argv
    f = flags.FLAGS
    try:
      if f.verify:
        params, meta = load(f.verify)
        nonzero = sum(int(np.count_nonzero(v)) for v in jax.tree.leaves(params))
        total = sum(v.size for v in jax.tree.leaves(params))
        sys.stdout.write(f'{f.verify}: step {meta["step"]}, {len(meta["patterns"])} N:M kernels, '
                         f'{total} parameters, {nonzero} non-zero\n')
        return
      if not f.workdir or not f.output:
        raise ValueError('give --workdir and --output (or --verify=FILE).')
      report = export(f.workdir, f.output)
      sys.stdout.write(f'{f.output}: {report}\n')
    except (ValueError, FileNotFoundError) as e:
      sys.stderr.write(f'error: {" ".join(str(e).split())}\n')
      sys.exit(2)

  app.run(run, argv)


if __name__ == '__main__':
  main()
