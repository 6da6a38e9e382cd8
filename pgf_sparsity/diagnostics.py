"""What the loop reports about sparsity.

`nm_summary`, computed where the arrays live (so sharded state is never gathered), at every log step of the
sparse phases: the realised N:M per kernel, total sparsity, the pattern per target, and
`mask_flip_rate_log`, the fraction of mask entries that differ from the previous log step's masks. (The
train step's own `mask_flip_rate_step` is the fraction that changed from one step to the next, averaged
over the log interval.)

`GradientNoise`, the paper's gradient-noise diagnostic (SPEC section 7), every K steps: per sparse layer,
std, L2 norm and max |.| of the gradient that reaches W (after the recipe's gradient flow), split into kept
and pruned entries; the change since the previous log point ||g_t - g_{t-K}||_2 and its std (the induced
noise); and mask flips ||m_t - m_{t-K}||_1 / numel.
"""
from typing import Dict, Mapping, Optional

import jax.numpy as jnp
import numpy as np

from pgf_sparsity import tree_paths
from pgf_sparsity.sparsity import BoundRecipe, StepPlan, nm


def nm_summary(recipe: BoundRecipe, params, masks, plan: StepPlan, previous_masks=None) -> Dict[str, float]:
  """Floats: nm_exact (mean over kernels of the fraction of groups with exactly N non-zeros
  after masking), sparsity, pattern_n/<target>, pattern_m/<target>, and mask_flip_rate_log when
  `previous_masks` (the masks at the previous log step) are given."""
  flat, flat_masks = tree_paths.flatten(params), tree_paths.flatten(masks)
  previous = tree_paths.flatten(previous_masks) if previous_masks is not None else None
  zeros = total = flips = 0
  exact = []
  for path in recipe.sparse_paths:
    mask = flat_masks[path]
    hardened = jnp.where(mask, flat[path], jnp.zeros((), flat[path].dtype))
    n, m = recipe.pattern_of(path, plan)
    exact.append(jnp.mean(nm.group_counts(hardened != 0, m, recipe.kernels[path][1]) == n))
    zeros += jnp.sum(hardened == 0)
    total += hardened.size
    if previous is not None:
      flips += jnp.sum(mask != previous[path])
  out = {'nm_exact': float(jnp.mean(jnp.stack(exact))), 'sparsity': float(zeros) / total}
  for name, n, m in plan.patterns:
    out[f'pattern_n/{name}'] = float(n)
    out[f'pattern_m/{name}'] = float(m)
  if previous is not None:
    out['mask_flip_rate_log'] = float(flips) / total
  return out


def _stats(values: np.ndarray, prefix: str) -> Dict[str, float]:
  if values.size == 0:
    return {}
  return {f'{prefix}_std': float(values.std()), f'{prefix}_l2': float(np.sqrt(np.sum(values.astype(np.float64) ** 2))),
          f'{prefix}_max': float(np.abs(values).max())}


class GradientNoise:
  """Keeps the previous log point's gradients and masks; `update` returns the scalars to log."""

  def __init__(self):
    self._previous: Optional[Mapping[str, np.ndarray]] = None
    self._previous_masks: Optional[Mapping[str, np.ndarray]] = None

  def update(self, grads: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray]) -> Dict[str, float]:
    out = {}
    for path, g in grads.items():
      g = np.asarray(g, np.float32)
      m = np.asarray(masks[path], bool)
      layer = path.rsplit('/', 1)[0]
      stats = {**_stats(g[m], 'grad_kept'), **_stats(g[~m], 'grad_pruned')}
      if self._previous is not None:
        change = g - self._previous[path]
        stats['grad_change_l2'] = float(np.sqrt(np.sum(change.astype(np.float64) ** 2)))
        stats['grad_change_std'] = float(change.std())
        stats['mask_flips'] = float(np.mean(m != self._previous_masks[path]))
      out.update({f'{layer}/{k}': v for k, v in stats.items()})
    self._previous = {p: np.asarray(g, np.float32) for p, g in grads.items()}
    self._previous_masks = {p: np.asarray(m, bool) for p, m in masks.items()}
    return out


def moving_average(values, window: int = 40) -> np.ndarray:
  """Trailing moving average (shorter at the start), the smoothing of the paper's figures."""
  values = np.asarray(values, np.float64)
  sums = np.cumsum(np.concatenate([[0.0], values]))
  idx = np.arange(1, len(values) + 1)
  lo = np.maximum(idx - window, 0)
  return (sums[idx] - sums[lo]) / (idx - lo)
