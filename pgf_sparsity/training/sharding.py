"""Where a run's arrays live: a named device mesh from `config.mesh`, and the shardings of the batch and of
the train state.

  config.mesh = {'data': -1, 'fsdp': 1}   # the default: data parallel over every device

Both axes split the batch. Along 'fsdp', every parameter is also sharded (FSDP / ZeRO-3): on the largest of
its axes that the axis size divides, and its optimizer state and mask with it. A sparse kernel is never
sharded on an axis its N:M groups run along, so every group lies whole on one device and computing a mask
needs no communication; a kernel with no other divisible axis stays replicated.
"""
import math
from typing import Any, Dict, Mapping, Sequence, Tuple

import jax
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from pgf_sparsity.sparsity import tree_paths

AXES = ('data', 'fsdp')


def mesh_shape(mesh_config: Mapping[str, Any], device_count: int) -> Tuple[int, ...]:
  """The sizes of AXES for `device_count` devices (one size may be -1: the devices left); ValueError on a
  mesh that does not fit."""
  given = dict(mesh_config)
  unknown = set(given) - set(AXES)
  if unknown:
    raise ValueError(f'Unknown config.mesh axes {sorted(unknown)}; the axes are {AXES}.')
  for axis, size in given.items():
    if isinstance(size, bool) or not isinstance(size, int) or not (size == -1 or size >= 1):
      raise ValueError(f'config.mesh.{axis} must be a positive integer or -1, got {size!r}.')
  free = [axis for axis in AXES if given[axis] == -1]
  if len(free) > 1:
    raise ValueError(f'config.mesh: only one axis may be -1, got {free}.')
  fixed = math.prod(given[axis] for axis in AXES if given[axis] != -1)
  if device_count % fixed:
    raise ValueError(f'config.mesh {given} does not fit the {device_count} devices.')
  if free:
    given[free[0]] = device_count // fixed
  elif fixed != device_count:
    raise ValueError(f'config.mesh {given} has {fixed} devices, but there are {device_count}.')
  return tuple(given[axis] for axis in AXES)


def make_mesh(mesh_config: Mapping[str, Any]) -> Mesh:
  shape = mesh_shape(mesh_config, jax.device_count())
  return Mesh(mesh_utils.create_device_mesh(shape, jax.devices()), AXES)


def batch_spec() -> P:
  return P(AXES)


def param_spec(shape: Sequence[int], fsdp_size: int, grouped_axes: Sequence[int] = ()) -> P:
  """FSDP: the largest axis that `fsdp_size` divides, never one of `grouped_axes`; replicated if none."""
  candidates = [a for a, n in enumerate(shape) if a not in grouped_axes and n % fsdp_size == 0]
  if fsdp_size == 1 or not candidates:
    return P()
  axis = max(candidates, key=lambda a: (shape[a], -a))
  return P(*(('fsdp' if a == axis else None) for a in range(len(shape))))


def param_specs(abstract_params, fsdp_size: int, grouped_axes: Mapping[str, Sequence[int]]) -> Dict[str, P]:
  """{parameter path: PartitionSpec}; `grouped_axes` gives the N:M grouping axes of the sparse kernels."""
  return {path: param_spec(leaf.shape, fsdp_size, grouped_axes.get(path, ()))
          for path, leaf in tree_paths.flatten(abstract_params).items()}


def like_params(mesh: Mesh, tree, abstract_params, specs: Mapping[str, P]):
  """NamedShardings of a pytree that holds parameter-shaped leaves (the masks, the optimizer state): a leaf
  whose path ends in a parameter's path and has its shape (the parameter, its mask, Adam's moments) is
  sharded like that parameter, any other leaf by its own shape (e.g. Adafactor's factored statistics)."""
  shapes = {path: tuple(leaf.shape) for path, leaf in tree_paths.flatten(abstract_params).items()}
  by_length = sorted(specs, key=len, reverse=True)  # the longest matching parameter path wins

  def leaf_sharding(key_path, leaf):
    path = tree_paths.path_string(key_path)
    for param_path in by_length:
      if (path == param_path or path.endswith('/' + param_path)) and tuple(leaf.shape) == shapes[param_path]:
        return NamedSharding(mesh, specs[param_path])
    return NamedSharding(mesh, param_spec(leaf.shape, mesh.shape['fsdp']))

  return jax.tree_util.tree_map_with_path(leaf_sharding, tree)
