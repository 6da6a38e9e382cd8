"""Training FLOPs of a sparse run (docs/method.md), for comparisons at equal training compute.

Per linear layer with P weights applied to T tokens: forward 2PT rho_f, input gradient 2PT rho_b, weight
gradient 2PT rho_w. Dense phase: rho = 1. Binary-mask phases (static, SR-STE, SDGF, fine-tune, MDGF once
beta = 0): rho_f = rho_b = N/M and rho_w = 1, since pruned weights still get gradients, except under the
'decayed' gradient flow, where they get none (rho_w = N/M). MDGF while beta > 0: dense cost. Attention
score and value matmuls (3 x 4 n^2 c per attention call), embeddings and the head are always dense.
Element-wise work (norms, activations, softmax) is not counted. Counts are per example and exact for the
layers they cover; `cumulative(step)` is a pure function of the step, so a resumed run continues its count.
"""
import dataclasses
import math
from typing import Dict, List, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from pgf_sparsity.models import swinv2, t5, vit
from pgf_sparsity.sparsity import BoundRecipe, StepPlan, schedules
from pgf_sparsity.sparsity.layers import SparseDenseGeneral

# Layers whose kernel is a weight matrix (DenseGeneral-like layers contract `module.axis`), and the
# attention modules whose two batched matmuls (logits, weighted values) are counted.
GENERAL_LINEAR_TYPES = (SparseDenseGeneral, nn.DenseGeneral)
LINEAR_TYPES = GENERAL_LINEAR_TYPES + (nn.Dense, nn.Conv)
ATTENTION_TYPES = (vit.SelfAttention, swinv2.WindowAttention, t5.MultiHeadAttention)


@dataclasses.dataclass(frozen=True)
class LinearLayer:
  path: str        # module path; its kernel is path + '/kernel'
  weights: int     # P
  tokens: float    # T per example


def count_layers(model: nn.Module, inputs) -> Tuple[List[LinearLayer], float]:
  """(linear layers with their tokens per example, attention matmul FLOPs per example forward), from an
  abstract forward pass on `inputs` (a tuple of batch-1 arrays, or an image shape)."""
  layers: Dict[str, LinearLayer] = {}
  attention = [0.0]
  batch = 1

  def interceptor(next_fun, args, kwargs, context):
    module = context.module
    cross_capable = isinstance(module, t5.MultiHeadAttention)  # (inputs_q, inputs_kv, ...)
    if context.method_name == '__call__' and isinstance(module, ATTENTION_TYPES):
      q = args[0]
      kv = args[1] if cross_capable else q
      inner = module.num_heads * module.head_dim if cross_capable else q.shape[2]
      attention[0] += q.shape[0] // batch * 4.0 * q.shape[1] * kv.shape[1] * inner
    out = next_fun(*args, **kwargs)
    if context.method_name == '__call__' and isinstance(module, LINEAR_TYPES):
      kernel = module.variables['params']['kernel']
      weights = math.prod(kernel.shape)
      x = args[0]
      if isinstance(module, nn.Conv):  # one token per output position
        tokens = math.prod(out.shape[:-1]) / batch
      elif isinstance(module, GENERAL_LINEAR_TYPES):
        axes = (module.axis,) if isinstance(module.axis, int) else tuple(module.axis)
        tokens = math.prod(x.shape) / math.prod(x.shape[a] for a in axes) / batch
      else:
        tokens = math.prod(x.shape[:-1]) / batch
      path = '/'.join(module.path)
      layers[path] = LinearLayer(path, weights, tokens)
    return out

  if not isinstance(inputs, tuple) or not hasattr(inputs[0], 'shape'):
    inputs = (jnp.zeros((batch,) + tuple(inputs), jnp.float32),)

  def forward():
    with nn.intercept_methods(interceptor):
      variables = model.init(jax.random.PRNGKey(0), *inputs)
      layers.clear()
      attention[0] = 0.0
      return model.apply(variables, *inputs)

  jax.eval_shape(forward)
  return list(layers.values()), attention[0]


class TrainingFlops:
  """FLOPs per step and cumulative FLOPs of a run, per example times the global batch."""

  def __init__(self, model: nn.Module, inputs, recipe: BoundRecipe, batch_size: int):
    self.layers, self.attention = count_layers(model, inputs)
    self.recipe = recipe
    self.batch_size = batch_size
    targets = {path.rsplit('/', 1)[0]: target for path, (target, _) in recipe.kernels.items()}
    self._target_of = {layer.path: targets.get(layer.path) for layer in self.layers}

  def per_step(self, plan: StepPlan, beta_positive: bool) -> float:
    """Training FLOPs of one step under `plan`, beta > 0 meaning MDGF's dense-cost regime."""
    total = 3.0 * self.attention
    for layer in self.layers:
      target = self._target_of[layer.path]
      base = 2.0 * layer.weights * layer.tokens
      if target is None or not plan.sparse or beta_positive:
        total += 3.0 * base
        continue
      n, m = plan.pattern(target.name)
      density = n / m
      weight_grad = density if self.recipe.recipe.flow == 'decayed' else 1.0
      total += base * (2.0 * density + weight_grad)
    return total * self.batch_size

  def _segments(self, upto: int):
    """(start, end, plan, beta_positive) pieces of [0, upto) with constant FLOPs per step."""
    sp = self.recipe
    step = 0
    while step < upto:
      plan = sp.plan(step)
      end = min(sp.plan_end(step), upto)
      if plan.beta_kind == 'exponential':
        yield step, end, plan, True
      elif plan.beta_kind == 'linear':
        zero_at = sp.phases.sparse_start + math.ceil(1.0 / sp.recipe.alpha)  # first step with beta = 0
        split = min(max(zero_at, step), end)
        if split > step:
          yield step, split, plan, True
        if end > split:
          yield split, end, plan, False
      else:
        yield step, end, plan, False
      step = end

  def cumulative(self, step: int) -> float:
    """Training FLOPs of steps [0, step)."""
    return sum((end - start) * self.per_step(plan, beta_positive)
               for start, end, plan, beta_positive in self._segments(step))

  def dense_cumulative(self, step: int) -> float:
    dense_plan = StepPlan(schedules.DENSE, 0, (), 'zero')
    return step * self.per_step(dense_plan, False)
