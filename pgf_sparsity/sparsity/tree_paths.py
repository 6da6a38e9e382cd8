"""Parameter trees addressed by '/'-joined path strings, the language of regex parameter selectors."""
from typing import Any, Dict

import jax


def path_string(key_path) -> str:
  """'a/b/kernel' from a jax.tree_util key path (dict keys, attribute names and sequence indices alike)."""
  """'a/b/kernel' from a jax.tree_util key path (dict keys, attribute names and sequence indices alike)."""
  parts = []
  for k in key_path:
    for attr in ('key', 'name', 'idx'):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return '/'.join(parts)


def flatten(tree) -> Dict[str, Any]:
  """A pytree's leaves by path.

  Args:
    tree: a pytree: nested dicts, an NNX State, an Equinox module, ...

  Returns:
    {'a/b/kernel': leaf} for every leaf.
  """
  return {path_string(kp): leaf for kp, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def unflatten_like(tree, flat: Dict[str, Any]):
  """The inverse of flatten.

  Args:
    tree: a pytree giving the structure.
    flat: {path: leaf} holding every path of `tree`.

  Returns:
    A pytree of `tree`'s structure whose leaves are flat[path].
  """
  key_paths, treedef = jax.tree_util.tree_flatten_with_path(tree)
  return jax.tree_util.tree_unflatten(treedef, [flat[path_string(kp)] for kp, _ in key_paths])


def nest(flat: Dict[str, Any]) -> Dict[str, Any]:
  """Nested dicts from paths.

  Args:
    flat: {'a/b': x, ...}.

  Returns:
    {'a': {'b': x}, ...}.
  """
  out: Dict[str, Any] = {}
  for path, value in flat.items():
    node = out
    *parents, last = path.split('/')
    for p in parents:
      node = node.setdefault(p, {})
    node[last] = value
  return out
