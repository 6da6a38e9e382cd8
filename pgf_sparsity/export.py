"""Export a trained run as an exactly N:M model, check a model file, evaluate it.

  .venv/bin/python -m pgf_sparsity.export --workdir=DIR --output=model.safetensors  # dense + zeros, PyTorch layout
  .venv/bin/python -m pgf_sparsity.export --workdir=DIR --output=model.safetensors --packed
  .venv/bin/python -m pgf_sparsity.export --workdir=DIR --output=model.npz --dtype=bfloat16  # the packed format
  .venv/bin/python -m pgf_sparsity.export --workdir=DIR --output=model_params/     # Flax parameters (orbax)
  .venv/bin/python -m pgf_sparsity.export --verify=model.npz
  .venv/bin/python -m pgf_sparsity.export --evaluate=model.npz   # the run's evaluation, on the file's weights

The format follows the output's extension (model_files.py). Values keep the checkpoint's dtype unless
--dtype says otherwise; an existing output is only replaced with --overwrite.
"""
import json
import sys

import numpy as np

from pgf_sparsity.formats import exporting
from pgf_sparsity.formats import model_files
from pgf_sparsity.sparsity import tree_paths


def main(argv=None):
  from absl import app, flags, logging  # pylint: disable=g-import-not-at-top,multiple-import-on-one-line
  flags.DEFINE_string('workdir', None, 'Training workdir to export.')
  flags.DEFINE_string('output', None, "Output: .safetensors, .npz (packed), or a directory ending in '/' (orbax).")
  flags.DEFINE_bool('packed', False, 'With .safetensors: the packed arrays instead of dense with zeros.')
  flags.DEFINE_string('dtype', '', f'Value dtype, one of {model_files.DTYPES} (default: the checkpoint\'s).')
  flags.DEFINE_bool('overwrite', False, 'Replace an existing output.')
  flags.DEFINE_bool('tensor_cores', False, 'Store 2:4 kernels (2-D, groups along `in`) in the form of NVIDIA\'s '
                    'sparse tensor cores (packed outputs only).')
  flags.DEFINE_string('verify', None, 'Load this model file and report it.')
  flags.DEFINE_string('evaluate', None, 'Evaluate this model file on its run\'s evaluation data.')
  flags.DEFINE_enum('inference', 'auto', ['auto', 'sparse', 'dense'], 'With --evaluate: compute N:M layers from '
                    'their packed form where faster (auto), wherever possible (sparse), or never (dense).')

  def run(argv):
    del argv
    f = flags.FLAGS
    if not f['verbosity'].present:
      logging.set_verbosity(logging.WARNING)  # no library INFO chatter unless asked for
    try:
      if f.verify:
        params, meta = exporting.load(f.verify)
        leaves = list(tree_paths.flatten(params).values())
        nonzero = sum(int(np.count_nonzero(v)) for v in leaves)
        sys.stdout.write(f'{f.verify}: step {meta.get("step")}, {len(meta["layers"])} N:M kernels, '
                         f'{sum(v.size for v in leaves)} parameters, {nonzero} non-zero\n')
      elif f.evaluate:
        sys.stdout.write(json.dumps(exporting.evaluate(f.evaluate, f.inference)) + '\n')
      elif f.workdir and f.output:
        report = exporting.export(f.workdir, f.output, packed=f.packed, dtype=f.dtype, overwrite=f.overwrite,
                        tensor_cores=f.tensor_cores)
        sys.stdout.write(f'{f.output}: {report}\n')
      else:
        raise ValueError('give --workdir and --output (or --verify=FILE, or --evaluate=FILE).')
    except (ValueError, FileNotFoundError) as e:
      sys.stderr.write(f'error: {" ".join(str(e).split())}\n')
      sys.exit(2)

  app.run(run, argv)


if __name__ == '__main__':
  main()
