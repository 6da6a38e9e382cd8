"""The optax gradient transformation that owns what reaches pruned weights.

The sparse layers use a straight-through estimator, so the gradient arriving here for a sparse kernel is
g = dL/dW~ for every entry, pruned or not. This transformation then applies the recipe's flow:

  decayed: kept entries get g, pruned entries get beta * g  (= autodiff of W * (m + (1 - m) beta))
  ste:     every entry gets g, whatever beta is             (the reference code's behaviour)
  SR-STE:  ste, plus lambda * (1 - m) * W                   (Zhou et al. 2021)

Place it first in the chain, before clipping and AdamW, so that the SR-STE term is part of the gradient
(not decoupled weight decay). Masks and beta are computed once per step by the train step and passed as
extra arguments, so the forward pass and this transformation always see the same mask.
"""
import re
from typing import Dict, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import optax

from pgf_sparsity import tree_paths

SEMANTICS = ('decayed', 'ste')


class GradientFlowState(NamedTuple):
  """Stateless: masks and beta arrive with every update."""


def nm_gradient_flow(targets: Sequence[str], semantics: str = 'decayed',
                  srste_lambda: float = 0.0) -> optax.GradientTransformationExtraArgs:
  """Gradient flow to pruned weights of the parameters whose path fully matches one of `targets`.

  Args:
    targets: regular expressions over '/'-joined parameter paths (e.g. '.*/mlp/fc[12]/kernel').
    semantics: 'decayed' or 'ste' (see module docstring).
    srste_lambda: the SR-STE coefficient; 0 disables the term. Requires semantics='ste', since SR-STE is
      defined on the straight-through gradient.

  The update takes keyword arguments `nm_masks` ({path: bool mask}, exactly the selected parameters, or
  None in the dense phase: then the gradients pass through untouched) and `nm_beta` (scalar).
  """
  if semantics not in SEMANTICS:
    raise ValueError(f'Unknown gradient-flow semantics {semantics!r}; choose one of {SEMANTICS}.')
  if not srste_lambda >= 0.0:
    raise ValueError(f'srste_lambda must be >= 0, got {srste_lambda}.')
  if srste_lambda > 0.0 and semantics != 'ste':
    raise ValueError('SR-STE is defined on the straight-through gradient: use semantics="ste" with '
                     'srste_lambda > 0 (decayed gradients plus the SR-STE term have no agreed meaning).')
  patterns = [re.compile(t) for t in targets]

  def init(params):
    del params
    return GradientFlowState()

  def update(updates, state, params=None, *, nm_masks: Optional[Dict[str, jax.Array]] = None,
             nm_beta=None, **unused_extra_args):
    if nm_masks is None:
      return updates, state
    flat_updates = tree_paths.flatten(updates)
    selected = {p for p in flat_updates if any(r.fullmatch(p) for r in patterns)}
    if selected != set(nm_masks):
      raise ValueError(f'Masks given for {sorted(nm_masks)} but the targets select {sorted(selected)}.')
    if srste_lambda > 0.0 and params is None:
      raise ValueError('SR-STE needs the parameters: call update(updates, state, params, ...).')
    flat_params = tree_paths.flatten(params) if params is not None else {}
    beta = jnp.asarray(0.0 if nm_beta is None else nm_beta)

    out = {}
    for path, g in flat_updates.items():
      if path not in selected:
        out[path] = g
        continue
      mask = nm_masks[path]
      if semantics == 'decayed':
        g = jnp.where(mask, g, beta.astype(g.dtype) * g)
      if srste_lambda > 0.0:
        g = g + jnp.where(mask, 0, srste_lambda * flat_params[path]).astype(g.dtype)
      out[path] = g
    return tree_paths.unflatten_like(updates, out), state

  return optax.GradientTransformationExtraArgs(init, update)
