"""The step functions of a run, pure given an Experiment and a plan, and their jitted forms.

  train_step(exp, plan, state, batch) -> (state, metrics)
  gradient_noise(exp, plan, state, batch) -> (gradients after the flow, masks, raw gradients), targeted kernels
  eval_sums(exp, params, batch), decode(exp, params, batch)

Masks are computed once per step and shared by the forward pass and the optimizer's gradient flow.
`CompiledSteps` jits one train step per plan (phase / SDGF frame), so a run compiles once per plan.
"""
import functools
from typing import Any, Dict, List

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils

from pgf_sparsity.sparsity import nm
from pgf_sparsity.sparsity import StepPlan
from pgf_sparsity.sparsity import tree_paths
from pgf_sparsity.training.experiment import Experiment, TrainState


def _sparsity_inputs(exp: Experiment, plan: StepPlan, state: TrainState):
  """(masks or None, beta, extra model variables) of this step."""
  recipe = exp.recipe
  if not plan.sparse:
    return None, jnp.ones((), jnp.float32), {}
  if recipe.recipe.mask_update_every == 1:
    masks = recipe.masks(state.params, plan)
  else:
    masks = jax.lax.cond(recipe.is_refresh_step(state.step, plan), lambda: recipe.masks(state.params, plan),
                         lambda: state.masks)
  beta = recipe.beta(state.step, plan)
  return masks, beta, {'sparsity': recipe.collection(masks, beta)}


def _gradients(exp: Experiment, plan: StepPlan, state: TrainState, batch):
  masks, beta, variables = _sparsity_inputs(exp, plan, state)
  rng = jax.random.fold_in(state.rng, state.step)

  def loss_fn(params):
    apply_fn = lambda p, *args, **kwargs: exp.model.apply({'params': p, **variables}, *args, **kwargs)
    return exp.task.train_loss(apply_fn, params, batch, rng)

  (loss, task_metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  return loss, task_metrics, grads, masks, beta


def _flip_fraction(masks, previous) -> jax.Array:
  """The fraction of sparse-kernel entries whose mask changed."""
  pairs = [(a, b) for a, b in zip(jax.tree.leaves(masks), jax.tree.leaves(previous))]
  return sum(nm.count_changed(a, b) for a, b in pairs) / sum(a.size for a, _ in pairs)


def _flowed(exp: Experiment, state: TrainState, grads, masks, beta):
  """The gradients after the recipe's flow: what the optimizer clips and adapts (the raw straight-through
  gradients where no masks apply). The same computation as the first transformation of `exp.tx`, so in the
  train step XLA computes it, and its norm with the clip's, once."""
  if masks is None:
    return grads
  flowed, _ = exp.recipe.transform().update(grads, optax.EmptyState(), state.params, nm_masks=masks,
                                            nm_beta=beta)
  return flowed


def train_step(exp: Experiment, plan: StepPlan, state: TrainState, batch):
  loss, task_metrics, grads, masks, beta = _gradients(exp, plan, state, batch)
  updates, opt_state = exp.tx.update(grads, state.opt_state, state.params, nm_masks=masks, nm_beta=beta)
  params = optax.apply_updates(state.params, updates)
  metrics = {'loss': loss, **task_metrics, 'grad_norm': optax.tree.norm(_flowed(exp, state, grads, masks, beta)),
             'learning_rate': exp.learning_rate(state.step), 'beta': beta}
  if masks is not None:
    metrics['mask_flip_rate_step'] = _flip_fraction(masks, state.masks)
  new_masks = masks if masks is not None else state.masks
  finite = jnp.isfinite(loss) & jnp.isfinite(metrics['grad_norm'])
  first_bad = jnp.where((state.nonfinite_step < 0) & ~finite, state.step, state.nonfinite_step)
  if exp.config.nonfinite == 'skip':  # keep the previous parameters and optimizer state
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
    params, opt_state, new_masks = (keep(params, state.params), keep(opt_state, state.opt_state),
                                    keep(new_masks, state.masks))
    metrics['skipped_updates'] = 1.0 - finite.astype(jnp.float32)
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state, masks=new_masks,
                       nonfinite_step=first_bad), metrics


def gradient_noise(exp: Experiment, plan: StepPlan, state: TrainState, batch):
  """For the noise diagnostic, per targeted kernel: the gradient after the recipe's flow at this step, its
  mask (all True outside the sparse phase and under the dense recipe), and the raw straight-through
  gradient before the flow."""
  _, _, grads, masks, beta = _gradients(exp, plan, state, batch)
  flat = tree_paths.flatten(_flowed(exp, state, grads, masks, beta))
  flat_masks = tree_paths.flatten(masks) if masks is not None else {}
  paths = exp.recipe.targeted_paths
  raw = tree_paths.flatten(grads)
  return ({p: flat[p] for p in paths},
          {p: flat_masks.get(p, jnp.ones(flat[p].shape, bool)) for p in paths},
          {p: raw[p] for p in paths})


def _eval_variables(exp: Experiment, params) -> Dict[str, Any]:
  """Evaluation always uses the exported model: binary masks at the target N:M."""
  plan = exp.recipe.final_plan()
  if not (plan.sparse and exp.recipe.kernels):
    return {}
  return {'sparsity': exp.recipe.collection(exp.recipe.masks(params, plan), jnp.zeros((), jnp.float32))}


def _eval_apply(exp: Experiment, params, packed=None, arrays=None):
  """The model's apply for evaluation; with `packed` (packed_layers.PackedModel), N:M layers computed from
  their packed form (`arrays`, its device arrays)."""
  sparsity = _eval_variables(exp, params)
  apply = exp.model.apply if packed is None else functools.partial(packed.apply, exp.model, arrays=arrays)
  return lambda p, *args, variables=None, **kwargs: apply({'params': p, **sparsity, **(variables or {})}, *args,
                                                          **kwargs)


def eval_sums(exp: Experiment, params, batch, arrays=None, *, packed=None):
  return exp.task.eval_sums(_eval_apply(exp, params, packed, arrays), params, batch)


def decode(exp: Experiment, params, batch, arrays=None, *, packed=None):
  return exp.task.decode(_eval_apply(exp, params, packed, arrays), params, batch)


def all_processes(texts: List[str]) -> List[str]:
  """Every process's texts, in process order: corpus metrics (BLEU, F1, correlations) need every example."""
  if jax.process_count() == 1:
    return texts
  encoded = [t.encode() for t in texts]
  sizes = multihost_utils.process_allgather(np.array([len(encoded), max(map(len, encoded), default=0)]))
  table = np.zeros((int(sizes[:, 0].max()), int(sizes[:, 1].max())), np.uint8)
  lengths = np.full(len(table), -1, np.int32)  # -1: no text in this row
  for row, text in enumerate(encoded):
    table[row, :len(text)] = np.frombuffer(text, np.uint8)
    lengths[row] = len(text)
  tables, all_lengths = multihost_utils.process_allgather((table, lengths))
  return [bytes(tables[p, row, :n]).decode() for p in range(len(tables)) for row, n in enumerate(all_lengths[p])
          if n >= 0]


class CompiledSteps:
  """The jitted step functions of an Experiment, compiled on first use (one train step per plan).

  With `packed` (packed_layers.PackedModel), evaluation and decoding compute its N:M layers from their
  packed form (single-device inference, e.g. `export --evaluate`)."""

  def __init__(self, exp: Experiment, packed=None):
    self.exp = exp
    self.packed = packed
    self.cache = {}

  def _jit(self, fn, *args, on_params: bool = False, out=None):
    """fn(exp, *args, state or params, batch) jitted with the state's (or the parameters') sharding."""
    key = (fn.__name__, *args)
    if key not in self.cache:
      exp = self.exp
      first = exp.state_sharding.params if on_params else exp.state_sharding
      self.cache[key] = jax.jit(functools.partial(fn, exp, *args), in_shardings=(first, exp.batch_sharding),
                                out_shardings=exp.replicated if out is None else out)
    return self.cache[key]

  def _on_params(self, fn, out=None):
    """fn(exp, params, batch) jitted; with `packed`, its arrays passed along as arguments (not constants)."""
    if self.packed is None:
      return self._jit(fn, on_params=True, out=out)
    key = (fn.__name__, 'packed')
    if key not in self.cache:
      self.cache[key] = jax.jit(functools.partial(fn, self.exp, packed=self.packed))
    return functools.partial(self.cache[key], arrays=self.packed.arrays)

  def train_step(self, plan: StepPlan):
    """The train step of `plan`, called as step(state, batch) -> (state, metrics)."""
    key = ('train_step', plan)
    if key not in self.cache:
      exp = self.exp

      def step(state, masks, batch):
        return train_step(exp, plan, state.replace(masks=masks), batch)

      # The state is donated (updated in place) but for its masks: the step reads the old masks (the flip
      # count) after computing the new ones, so XLA would copy both to write the new masks into the old
      # buffers (two copies per sparse kernel per step); the new masks go to fresh buffers instead.
      self.cache[key] = jax.jit(step, in_shardings=(exp.state_sharding.replace(masks=None),
                                                    exp.state_sharding.masks, exp.batch_sharding),
                                out_shardings=(exp.state_sharding, exp.replicated), donate_argnums=(0,))
    jitted = self.cache[key]
    return lambda state, batch: jitted(state.replace(masks=None), state.masks, batch)

  def gradient_noise(self, plan: StepPlan):
    return self._jit(gradient_noise, plan)

  def evaluate(self, params, data) -> Dict[str, float]:
    """Evaluation metrics of the exact N:M model on the data's evaluation batches."""
    step = self._on_params(eval_sums)
    totals = {}
    for batch in data.eval_batches():
      for k, v in jax.device_get(step(params, self.exp.shard(batch))).items():
        totals[k] = totals.get(k, 0.0) + float(v)
    results = self.exp.task.finalize(totals)
    if self.exp.task.decodes:
      references = data.references()
      predictions = [data.detokenize(ids) for ids in self.predict(params, data)[:len(references)]]
      results.update(self.exp.task.corpus_metrics(all_processes(predictions), all_processes(references)))
    return results

  def predict(self, params, data) -> List[np.ndarray]:
    """Decoded predictions (token ids) for every evaluation example of this process, in order."""
    step = self._on_params(decode, out=self.exp.batch_sharding)
    out = []
    for batch in data.eval_batches():
      predicted = step(params, self.exp.shard(batch))
      shards = sorted(predicted.addressable_shards, key=lambda shard: shard.index[0].start or 0)
      local = np.concatenate([np.asarray(shard.data) for shard in shards])  # this process's rows, in order
      out.extend(local[batch['mask'] > 0])
    return out
