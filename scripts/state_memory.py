"""Training-state memory per device (parameters, N:M masks, optimizer state), data parallel vs FSDP, from
jax.eval_shape and the shardings the run would use: nothing is allocated. Activations come on top.

  .venv/bin/python scripts/state_memory.py --devices=8   # ViT-L/16 (AdamW) and T5-large (Adafactor)
  .venv/bin/python scripts/state_memory.py --config=configs/vit_i1k.py:variant=B/16 --devices=8

The devices are simulated CPU devices, so the numbers hold for any accelerator with that many.
"""
import argparse
import math
import os
import sys

DEFAULT_CONFIGS = ('configs/vit_i1k.py:variant=L/16', 'configs/t5_c4.py:variant=large')


def _spec_for(config):
  """The DataSpec the config's data would give, without reading the data."""
  from pgf_sparsity.data import DataSpec  # pylint: disable=g-import-not-at-top
  name = config.dataset.name
  if name == 'tfds':
    size = config.dataset.get('image_size', 224)
    return DataSpec('image_classification', {'image': (size, size, 3)}, config.model.num_classes, 1000)
  from pgf_sparsity.data import span_corruption  # pylint: disable=g-import-not-at-top
  inputs = config.dataset.get('inputs_length') or 512
  targets = span_corruption.corrupted_lengths(span_corruption.raw_length(inputs))[1]
  return DataSpec('seq2seq', {'inputs': (inputs,), 'targets': (targets,)}, 32128, 1000)


def build_experiment(config):
  """The config's Experiment (its state's shapes do not depend on the mesh)."""
  from pgf_sparsity.training import experiment, validation  # pylint: disable=g-import-not-at-top
  return experiment.build(config, _spec_for(config), validation.check_config(config))


def per_device_bytes(exp, mesh) -> dict:
  """{'params'|'masks'|'opt_state'|'total': the largest per-device bytes over the devices} on the mesh
  (config.mesh form) that the run would use."""
  import jax  # pylint: disable=g-import-not-at-top
  from pgf_sparsity.training import experiment, sharding  # pylint: disable=g-import-not-at-top
  shardings = experiment.state_shardings(sharding.make_mesh(mesh), exp.state_shapes, exp.recipe)
  per_leaf = jax.tree.map(lambda leaf, where: math.prod(where.shard_shape(leaf.shape)) * leaf.dtype.itemsize,
                          exp.state_shapes, shardings)
  out = {part: sum(jax.tree.leaves(getattr(per_leaf, part))) for part in ('params', 'masks', 'opt_state')}
  out['total'] = sum(out.values())
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--config', action='append', help='config file[:args]; repeatable')
  parser.add_argument('--devices', type=int, default=8)
  args = parser.parse_args()
  os.environ['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={args.devices}'
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from pgf_sparsity import config_lib  # pylint: disable=g-import-not-at-top  (after XLA_FLAGS is set)
  gib = 2.0 ** 30
  print('| config | mesh | params GiB/device | masks GiB/device | optimizer GiB/device | state GiB/device |')
  print('|---|---|---|---|---|---|')
  for config_arg in args.config or DEFAULT_CONFIGS:
    path, _, arg = config_arg.partition(':')
    exp = build_experiment(config_lib.from_file(path, arg))
    for mesh in ({'data': -1, 'fsdp': 1}, {'data': 1, 'fsdp': -1}):
      sizes = per_device_bytes(exp, mesh)
      label = 'data parallel' if mesh['fsdp'] == 1 else f'FSDP over {args.devices}'
      print(f'| {config_arg} | {label} | {sizes["params"] / gib:.3f} | {sizes["masks"] / gib:.3f} | '
            f'{sizes["opt_state"] / gib:.3f} | {sizes["total"] / gib:.3f} |')


if __name__ == '__main__':
  main()
