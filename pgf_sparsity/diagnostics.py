"""The gradient-noise diagnostic of the paper (SPEC section 7), computed on the host every K steps.

Per sparse layer and log point: std, L2 norm and max |.| of the gradient that reaches W (after the
recipe's gradient flow), split into kept and pruned entries; the change since the previous log point
||g_t - g_{t-K}||_2 and its std (the induced noise); and mask flips ||m_t - m_{t-K}||_1 / numel.
"""
from typing import Dict, Mapping, Optional

import numpy as np


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
