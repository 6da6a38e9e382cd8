"""The optax gradient transformation that owns what reaches pruned weights.

The sparse layers use a straight-through estimator, so the gradient arriving here for a sparse kernel is
g = dL/dW~ for every entry, pruned or not. This transformation then applies the recipe's flow:

  decayed: kept entries get g, pruned entries get beta * g  (= autodiff of W * (m + (1 - m) beta))
  ste:     every entry gets g, whatever beta is             (the reference code's behaviour)
  SR-STE:  ste, plus lambda * (1 - m) * W                   (Zhou et al. 2021)

Place it first in the chain, before clipping and AdamW, so that the SR-STE term is part of the gradient
(not decoupled weight decay). Masks and beta are computed once per step by the train step and passed as
the extra arguments `nm_masks` and `nm_beta`, so the forward pass and this transformation always see the
same mask.
"""
import jax
import jax.numpy as jnp
import optax

FLOWS = ('decayed', 'ste')


def _is_dense(leaf) -> bool:
  return leaf is None


def nm_gradient_flow(flow: str = 'decayed', srste_lambda: float = 0.0) -> optax.GradientTransformationExtraArgs:
  """Gradient flow to pruned weights.

  Args:
    flow: 'decayed' or 'ste' (see module docstring).
    srste_lambda: the SR-STE coefficient; 0 disables the term. Requires flow='ste', since SR-STE is
      defined on the straight-through gradient.

  `update` takes the keyword arguments `nm_masks`, a params-shaped pytree of boolean masks with None at
  dense leaves (or None for no sparsity at all, e.g. the dense phase: gradients pass through untouched),
  and `nm_beta`, the scalar mask value of pruned weights.
  """
  if flow not in FLOWS:
    raise ValueError(f'Unknown gradient flow {flow!r}; choose one of {FLOWS}.')
  if not srste_lambda >= 0.0:
    raise ValueError(f'srste_lambda must be >= 0, got {srste_lambda}.')
  if srste_lambda > 0.0 and flow != 'ste':
    raise ValueError('SR-STE is defined on the straight-through gradient: use flow="ste" with '
                     'srste_lambda > 0 (decayed gradients plus the SR-STE term have no agreed meaning).')

  def init(params):
    del params
    return optax.EmptyState()

  def update(updates, state, params=None, *, nm_masks=None, nm_beta=None, **unused_extra_args):
    if nm_masks is None:
      return updates, state
    if srste_lambda > 0.0 and params is None:
      raise ValueError('SR-STE needs the parameters: call update(updates, state, params, ...).')
    beta = jnp.asarray(0.0 if nm_beta is None else nm_beta)

    def flow_leaf(mask, g, w):
      if mask is None:
        return g
      if flow == 'decayed':
        g = jnp.where(mask, g, beta.astype(g.dtype) * g)
      if srste_lambda > 0.0:
        g = g + jnp.where(mask, 0, srste_lambda * w).astype(g.dtype)
      return g

    weights = updates if params is None else params
    return jax.tree.map(flow_leaf, nm_masks, updates, weights, is_leaf=_is_dense), state

  return optax.GradientTransformationExtraArgs(init, update)
