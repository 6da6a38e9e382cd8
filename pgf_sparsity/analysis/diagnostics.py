"""What the loop reports about sparsity.

`nm_summary`, computed where the arrays live (so sharded state is never gathered), at every log step of the
sparse phases: the realised N:M per kernel, total sparsity, the pattern per target, and
`mask_flip_rate_log`, the fraction of mask entries that differ from the previous log step's masks. (The
train step's own `mask_flip_rate_step` is the fraction that changed from one step to the next, averaged
over the log interval.)

`GradientNoise`, the paper's gradient-noise diagnostic (docs/method.md), every K steps: per sparse layer,
std, L2 norm and max |.| of the gradient, split into kept and pruned entries; the change since the previous
log point ||g_t - g_{t-K}||_2 and its std (the induced noise); and mask flips ||m_t - m_{t-K}||_1 / numel.
Two gradients are measured: `grad_*`, the one that reaches W after the recipe's gradient flow (what the
optimizer sees), and `raw_grad_*`, the straight-through gradient of the masked forward pass before the flow.
Under the `decayed` flow with beta = 0 the flowed gradient is zero on pruned entries by construction, so a
noise reduction is a property of training only where the raw gradient shows it too.
"""
import functools
from typing import Dict, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from pgf_sparsity.sparsity import BoundRecipe, StepPlan, nm
from pgf_sparsity.sparsity import tree_paths


@functools.partial(jax.jit, static_argnames=('n', 'm', 'axes'))
def _kernel_statistics(weight, mask, previous, *, n: int, m: int, axes: Tuple[int, ...]):
  """(fraction of exact groups, zeros after masking, entries changed since `previous` (0 without)): one
  program per kernel and log step, compiled once per shape and pattern."""
  hardened = jnp.where(mask, weight, jnp.zeros((), weight.dtype))
  exact = jnp.mean(nm.group_counts(hardened != 0, m, axes) == n)
  zeros = jnp.sum(hardened == 0, dtype=jnp.int32)
  flips = nm.count_changed(mask, previous) if previous is not None else jnp.zeros((), jnp.float32)
  return exact, zeros, flips


def nm_summary(recipe: BoundRecipe, params, masks, plan: StepPlan, previous_masks=None):
  """The realised N:M of every sparse kernel, computed where the arrays live.

  Returns:
    (summary, masks): floats nm_exact (mean over kernels of the fraction of groups with exactly N
    non-zeros after masking), sparsity, pattern_n/<target>, pattern_m/<target>, and mask_flip_rate_log when
    `previous_masks` (what the previous log step's call returned) are given; and the sparse kernels' masks
    by path, to pass as the next log step's `previous_masks` (a train step does not donate the masks).
  """
  flat, flat_masks = tree_paths.flatten(params), tree_paths.flatten(masks)
  previous = previous_masks if previous_masks is not None else {}
  per_kernel = []
  for path in recipe.sparse_paths:
    n, m = recipe.pattern_of(path, plan)
    per_kernel.append(_kernel_statistics(flat[path], flat_masks[path], previous.get(path), n=n, m=m,
                                         axes=recipe.kernels[path][1]))
  exact, zeros, flips = (np.asarray(column, np.float64) for column in zip(*jax.device_get(per_kernel)))
  total = sum(flat[path].size for path in recipe.sparse_paths)
  out = {'nm_exact': float(exact.mean()), 'sparsity': float(zeros.sum()) / total}
  for name, n, m in plan.patterns:
    out[f'pattern_n/{name}'] = float(n)
    out[f'pattern_m/{name}'] = float(m)
  if previous_masks is not None:
    out['mask_flip_rate_log'] = float(flips.sum()) / total
  return out, {path: flat_masks[path] for path in recipe.sparse_paths}


def _stats(values: np.ndarray, prefix: str) -> Dict[str, float]:
  if values.size == 0:
    return {}
  return {f'{prefix}_std': float(values.std()), f'{prefix}_l2': float(np.sqrt(np.sum(values.astype(np.float64) ** 2))),
          f'{prefix}_max': float(np.abs(values).max())}


class GradientNoise:
  """Keeps the previous log point's gradients and masks; `update` returns the scalars to log."""

  def __init__(self):
    self._previous: Dict[str, Mapping[str, np.ndarray]] = {}
    self._previous_masks: Optional[Mapping[str, np.ndarray]] = None

  def _layer_stats(self, kind: str, path: str, g: np.ndarray, m: np.ndarray) -> Dict[str, float]:
    stats = {**_stats(g[m], f'{kind}_kept'), **_stats(g[~m], f'{kind}_pruned')}
    if kind in self._previous:
      change = g - self._previous[kind][path]
      stats[f'{kind}_change_l2'] = float(np.sqrt(np.sum(change.astype(np.float64) ** 2)))
      stats[f'{kind}_change_std'] = float(change.std())
    return stats

  def update(self, grads: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray],
             raw_grads: Optional[Mapping[str, np.ndarray]] = None) -> Dict[str, float]:
    """grads: after the flow; raw_grads: before it (optional)."""
    kinds = {'grad': grads, **({'raw_grad': raw_grads} if raw_grads is not None else {})}
    kinds = {k: {p: np.asarray(g, np.float32) for p, g in v.items()} for k, v in kinds.items()}
    masks = {p: np.asarray(m, bool) for p, m in masks.items()}
    out = {}
    for path in grads:
      layer = path.rsplit('/', 1)[0]
      stats = {}
      for kind, values in kinds.items():
        stats.update(self._layer_stats(kind, path, values[path], masks[path]))
      if self._previous_masks is not None:
        stats['mask_flips'] = float(np.mean(masks[path] != self._previous_masks[path]))
      out.update({f'{layer}/{k}': v for k, v in stats.items()})
    self._previous, self._previous_masks = kinds, masks
    return out


def moving_average(values, window: int = 40) -> np.ndarray:
  """Trailing moving average (shorter at the start), the smoothing of the paper's figures."""
  values = np.asarray(values, np.float64)
  sums = np.cumsum(np.concatenate([[0.0], values]))
  idx = np.arange(1, len(values) + 1)
  lo = np.maximum(idx - window, 0)
  return (sums[idx] - sums[lo]) / (idx - lo)
