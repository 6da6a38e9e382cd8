"""A sparse-training recipe: the validated `config.sparsity` block, its schedule and its binding.

Three steps, each returning a frozen object that is fully usable:

  recipe = Recipe.from_config(config.sparsity)   # validates every key; no parameters, no run length
  schedule = recipe.schedule(total_steps)        # phases, plans and beta: pure functions of the step
  bound = recipe.bind(abstract_params, total_steps)  # + the sparse kernels, every pattern checked

and then, once per training step:

  plan = bound.plan(step)                # static, hashable: phase, frame, N:M per target, beta kind
  masks = bound.masks(params, plan)      # params-shaped, None at dense leaves
  beta = bound.beta(step, plan)          # traced
  model.apply({'params': params, 'sparsity': bound.collection(masks, beta)}, x)   # the sparse layers, or
  model(bound.apply(params, masks, beta), x)                                     # any model of a pytree
  tx.update(grads, opt_state, params, nm_masks=masks, nm_beta=beta)   # tx starts with bound.transform()

Recipes (docs/method.md): dense, static, srste, mdgf_linear, mdgf_exponential, sdgf_stepwise,
sdgf_geometric, sdgf_custom. Config keys:
  recipe, flow ('decayed' | 'ste'), alpha, srste_lambda, group_axis ('in' | 'out'),
  targets: {name: {regex, n, m, in_ndim, layout ('in_out' | 'out_in')}}, sdgf_custom: {name: [[n, m], ...]},
  dense_steps | dense_fraction | dense_epochs, finetune_steps | finetune_fraction | finetune_epochs,
  mask_update_every.
"""
import dataclasses
import math
import re
from typing import Any, Dict, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp

from pgf_sparsity.sparsity import gradient_flow
from pgf_sparsity.sparsity import layers
from pgf_sparsity.sparsity import nm
from pgf_sparsity.sparsity import schedules
from pgf_sparsity.sparsity import tree_paths

RECIPES = ('dense', 'static', 'srste', 'mdgf_linear', 'mdgf_exponential', 'sdgf_stepwise',
           'sdgf_geometric', 'sdgf_custom')
_BETA_KIND = {'mdgf_linear': 'linear', 'mdgf_exponential': 'exponential'}
# Every key of the sparsity block and its default (a phase length is given in one unit: None elsewhere).
DEFAULTS = {'recipe': 'dense', 'flow': 'decayed', 'alpha': 0.0, 'srste_lambda': 2e-4, 'group_axis': 'in',
            'targets': {}, 'sdgf_custom': {}, 'dense_steps': None, 'dense_fraction': None, 'dense_epochs': None,
            'finetune_steps': None, 'finetune_fraction': None, 'finetune_epochs': None, 'mask_update_every': 1}
_TARGET_KEYS = {'regex', 'n', 'm', 'in_ndim', 'layout'}
# Where a kernel's input (contracted) axes are: leading, as in Flax (linen and NNX kernels are (in, out)), or
# trailing, as in Equinox and PyTorch (weights are (out, in)).
LAYOUTS = ('in_out', 'out_in')
Pattern = Tuple[int, int]


@dataclasses.dataclass(frozen=True)
class Target:
  """A sparse target: the kernels whose '/'-joined paths fully match `regex`, N:M along their `in_ndim`
  input axes, which lead (`layout` 'in_out') or trail ('out_in') the kernel's shape."""
  name: str
  regex: str
  n: int
  m: int
  in_ndim: int = 1
  layout: str = 'in_out'

  def axes(self, ndim: int, group_axis: str) -> Tuple[int, ...]:
    """The grouping axes of a kernel of rank `ndim`: its input axes ('in'), or its output axes ('out')."""
    inputs = range(self.in_ndim) if self.layout == 'in_out' else range(ndim - self.in_ndim, ndim)
    return tuple(a for a in range(ndim) if (a in inputs) == (group_axis == 'in'))


@dataclasses.dataclass(frozen=True)
class StepPlan:
  """What a training step does, fixed per phase and SDGF frame; one compilation each."""
  phase: str
  frame: int
  patterns: Tuple[Tuple[str, int, int], ...]  # (target name, n, m)
  beta_kind: str

  @property
  def sparse(self) -> bool:
    return self.phase != schedules.DENSE

  def pattern(self, target: str) -> Pattern:
    for name, n, m in self.patterns:
      if name == target:
        return n, m
    raise KeyError(target)


def _as_dict(config) -> Dict[str, Any]:
  if config is None:
    return {}
  return config.to_dict() if hasattr(config, 'to_dict') else dict(config)


def _finite_number(value, key: str) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
    raise ValueError(f'sparsity.{key} must be a finite number, got {value!r}.')
  return float(value)


def _parse_target(name: str, spec) -> Target:
  spec = _as_dict(spec)
  unknown = set(spec) - _TARGET_KEYS
  if unknown:
    raise ValueError(f'Unknown keys {sorted(unknown)} in sparsity.targets.{name}; known: {sorted(_TARGET_KEYS)}.')
  missing = {'regex', 'n', 'm'} - set(spec)
  if missing:
    raise ValueError(f'sparsity.targets.{name} needs {sorted(missing)}.')
  try:
    nm.validate_pattern(spec['n'], spec['m'])
    re.compile(spec['regex'])
  except (ValueError, re.error, TypeError) as e:
    raise ValueError(f'sparsity.targets.{name}: {e}') from None
  in_ndim = spec['in_ndim'] if 'in_ndim' in spec else 1
  if isinstance(in_ndim, bool) or not isinstance(in_ndim, int) or in_ndim < 1:
    raise ValueError(f'sparsity.targets.{name}.in_ndim must be an integer >= 1, got {in_ndim!r}.')
  layout = spec['layout'] if 'layout' in spec else 'in_out'
  if layout not in LAYOUTS:
    raise ValueError(f'sparsity.targets.{name}.layout must be one of {LAYOUTS}, got {layout!r}.')
  return Target(name, spec['regex'], spec['n'], spec['m'], in_ndim, layout)


def _parse_frames(recipe: str, targets, custom) -> Tuple[Tuple[Pattern, ...], ...]:
  """The pattern of every frame, per target (in target order); one frame unless the recipe is SDGF."""
  if custom and recipe != 'sdgf_custom':
    raise ValueError('sparsity.sdgf_custom is only used by recipe sdgf_custom.')
  frames = []
  for t in targets:
    if recipe.startswith('sdgf'):
      kind = recipe.split('_', 1)[1]
      if kind == 'custom' and t.name not in custom:
        raise ValueError(f'recipe sdgf_custom needs sparsity.sdgf_custom.{t.name}: a list of [n, m].')
      frames.append(tuple(schedules.sdgf_patterns(kind, t.n, t.m, custom[t.name] if kind == 'custom' else None)))
    else:
      frames.append(((t.n, t.m),))
  if len({len(f) for f in frames}) > 1:
    raise ValueError(f'All targets need the same number of SDGF frames, got '
                     f'{dict(zip((t.name for t in targets), frames))}.')
  return tuple(frames)


@dataclasses.dataclass(frozen=True)
class Recipe:
  """A validated sparsity config block; knows nothing of parameters or the run length."""
  name: str
  flow: str
  alpha: float
  srste_lambda: float
  group_axis: str
  mask_update_every: int
  targets: Tuple[Target, ...]
  frames: Tuple[Tuple[Pattern, ...], ...]  # per target, in target order
  dense: schedules.Duration
  finetune: schedules.Duration

  @classmethod
  def from_config(cls, config: Mapping[str, Any]) -> 'Recipe':
    """A recipe from its config block, every key checked.

    Args:
      config: the sparsity block (a mapping or ConfigDict); missing keys take `DEFAULTS`.

    Returns:
      A frozen Recipe.

    Raises:
      ValueError: naming the key, for an unknown key or an invalid value.
    """
    given = _as_dict(config)
    unknown = set(given) - set(DEFAULTS)
    if unknown:
      raise ValueError(f'Unknown sparsity config keys {sorted(unknown)}; known keys: {sorted(DEFAULTS)}.')
    cfg = {**DEFAULTS, **given}
    name = cfg['recipe']
    if name not in RECIPES:
      raise ValueError(f'Unknown sparsity.recipe {name!r}; choose one of {RECIPES}.')
    flow = cfg['flow']
    if flow not in gradient_flow.FLOWS:
      raise ValueError(f'sparsity.flow must be one of {gradient_flow.FLOWS}, got {flow!r}.')
    alpha = _finite_number(cfg['alpha'] or 0.0, 'alpha')
    srste_lambda = _finite_number(cfg['srste_lambda'], 'srste_lambda') if name == 'srste' else 0.0
    group_axis = cfg['group_axis']
    if group_axis not in ('in', 'out'):
      raise ValueError(f"sparsity.group_axis must be 'in' or 'out', got {group_axis!r}.")
    every = cfg['mask_update_every']
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
      raise ValueError(f'sparsity.mask_update_every must be an integer >= 1, got {every!r}.')
    if name.startswith('mdgf') and not alpha > 0.0:
      raise ValueError(f'{name} needs sparsity.alpha > 0 (the decay coefficient), got {alpha}.')
    if name == 'srste' and flow != 'ste':
      raise ValueError('recipe srste is defined on the straight-through gradient: set sparsity.flow="ste".')
    if name == 'srste' and not srste_lambda > 0.0:
      raise ValueError(f'recipe srste needs sparsity.srste_lambda > 0, got {srste_lambda}.')
    targets = tuple(_parse_target(k, v) for k, v in _as_dict(cfg['targets']).items())
    if name != 'dense' and not targets:
      raise ValueError(f'recipe {name} needs at least one entry in sparsity.targets.')
    frames = _parse_frames(name, targets, _as_dict(cfg['sdgf_custom']))
    durations = {phase: schedules.Duration(f'sparsity {phase} phase', cfg[f'{phase}_steps'],
                                           cfg[f'{phase}_fraction'], cfg[f'{phase}_epochs'])
                 for phase in ('dense', 'finetune')}
    return cls(name, flow, alpha, srste_lambda, group_axis, every, targets, frames, **durations)

  def phases(self, total_steps: int, steps_per_epoch: Optional[int] = None) -> schedules.Phases:
    """The dense, sparse and fine-tune phases of a run of `total_steps` (all dense for the dense recipe)."""
    if self.name == 'dense':
      return schedules.Phases(total_steps, total_steps, 0)
    return schedules.Phases(total_steps, self.dense.to_steps(total_steps, steps_per_epoch),
                            self.finetune.to_steps(total_steps, steps_per_epoch))

  def schedule(self, total_steps: int, steps_per_epoch: Optional[int] = None) -> 'Schedule':
    """The recipe over a run of `total_steps`: plans and beta per step, with no parameter tree."""
    return Schedule(self, self.phases(total_steps, steps_per_epoch))

  def bind(self, params, total_steps: int, steps_per_epoch: Optional[int] = None) -> 'BoundRecipe':
    """Resolves the targets on a parameter tree and validates every pattern of every frame against every
    selected kernel, before anything is compiled.

    Args:
      params: the parameter tree (arrays or ShapeDtypeStructs, e.g. from jax.eval_shape).
      total_steps: the run's length, which places the phases and SDGF frames.
      steps_per_epoch: needed only for durations given in epochs.

    Returns:
      A frozen BoundRecipe: plans, masks, beta and the gradient flow for this tree.
    """
    kernels = self._resolve(tree_paths.flatten(params))
    sparse = kernels if self.name != 'dense' else {}
    return BoundRecipe(self, self.phases(total_steps, steps_per_epoch), sparse, tuple(sorted(kernels)))

  def _resolve(self, flat) -> Dict[str, Tuple[Target, Tuple[int, ...]]]:
    """{kernel path: (its target, its grouping axes)} of every kernel a target selects."""
    kernels = {}
    for t, frames in zip(self.targets, self.frames):
      hits = [p for p in flat if re.fullmatch(t.regex, p)]
      if not hits:
        raise ValueError(f'sparsity.targets.{t.name}: regex {t.regex!r} matches no parameter. '
                         f'Some parameter paths: {sorted(flat)[:8]}')
      for path in hits:
        if path in kernels:
          raise ValueError(f'Parameter {path} is selected by targets {kernels[path][0].name} and {t.name}.')
        shape = flat[path].shape
        if len(shape) <= t.in_ndim:
          raise ValueError(f'sparsity.targets.{t.name} selects {path} of shape {shape}: in_ndim={t.in_ndim} '
                           'leaves no output axis (only weight matrices can be N:M sparse).')
        axes = t.axes(len(shape), self.group_axis)
        for n, m in frames:
          try:
            nm.check_groupable(shape, n, m, axes)
          except ValueError as e:
            raise ValueError(f'sparsity.targets.{t.name} at {path}, pattern {n}:{m}: {e}') from None
        kernels[path] = (t, axes)
    return kernels


@dataclasses.dataclass(frozen=True)
class Schedule:
  """A recipe over a run of known length: which plan and beta each step has (host side)."""
  recipe: Recipe
  phases: schedules.Phases

  @property
  def num_frames(self) -> int:
    return max((len(f) for f in self.recipe.frames), default=1)

  def frame_patterns(self) -> Dict[str, Tuple[Pattern, ...]]:
    """Every pattern each target will use, in order: {target: ((n, m), ...)}."""
    return {t.name: f for t, f in zip(self.recipe.targets, self.recipe.frames)}

  def plan(self, step: int) -> StepPlan:
    """What step `step` does.

    Args:
      step: a Python int (plans are static: the loop compiles one train step per plan).

    Returns:
      The StepPlan: phase, SDGF frame, N:M per target and beta's kind.
    """
    phase = self.phases.phase(step)
    if phase == schedules.DENSE:
      return StepPlan(phase, 0, (), 'zero')
    if phase == schedules.FINETUNE:
      return self.final_plan()
    frame = schedules.frame_index(self.phases.sparse_clock(step), self.phases.sparse_steps, self.num_frames)
    patterns = tuple((t.name, *f[frame]) for t, f in zip(self.recipe.targets, self.recipe.frames))
    return StepPlan(phase, frame, patterns, _BETA_KIND.get(self.recipe.name, 'zero'))

  def final_plan(self) -> StepPlan:
    """Binary masks at the target N:M: fine-tuning, evaluation and export (dense for the dense recipe)."""
    if self.recipe.name == 'dense':
      return StepPlan(schedules.DENSE, 0, (), 'zero')
    return StepPlan(schedules.FINETUNE, self.num_frames, tuple((t.name, t.n, t.m) for t in self.recipe.targets),
                    'zero')

  def plan_end(self, step: int) -> int:
    """First step after `step` with another plan (or total_steps)."""
    p = self.phases
    if step < p.sparse_start:
      return p.sparse_start
    if step >= p.finetune_start:
      return p.total_steps
    frame = self.plan(step).frame
    nxt = p.sparse_start + schedules.frame_start(frame + 1, p.sparse_steps, self.num_frames)
    return min(nxt, p.finetune_start) if frame + 1 < self.num_frames else p.finetune_start

  def plan_start(self, plan: StepPlan) -> int:
    """The first step of a sparse or fine-tune plan (its phase's or SDGF frame's start)."""
    p = self.phases
    if plan.phase == schedules.FINETUNE:
      return p.finetune_start
    return p.sparse_start + schedules.frame_start(plan.frame, p.sparse_steps, self.num_frames)

  def is_refresh_step(self, step, plan: StepPlan):
    """Whether masks are recomputed at `step` (traced), given mask_update_every and the plan's start."""
    every = self.recipe.mask_update_every
    if every == 1:
      return True
    return (self.phases.sparse_clock(step) % every == 0) | (step == self.plan_start(plan))

  def beta(self, step, plan: StepPlan):
    """The mask value of pruned weights.

    Args:
      step: the step (an int or traced).
      plan: the step's plan.

    Returns:
      A float32 scalar: 1 - alpha t or exp(-alpha t) for MDGF in the sparse phase (t counted from its
      start), 0 for binary masks.
    """
    return schedules.beta(plan.beta_kind, self.phases.sparse_clock(step), self.recipe.alpha)


@dataclasses.dataclass(frozen=True)
class BoundRecipe(Schedule):
  """A schedule bound to a parameter tree: masks, the layers' collection and the gradient flow."""
  kernels: Mapping[str, Tuple[Target, Tuple[int, ...]]]  # sparse kernel path -> (target, grouping axes)
  targeted_paths: Tuple[str, ...]  # what the targets select, also under the dense recipe (diagnostics)

  @property
  def sparse_paths(self) -> Tuple[str, ...]:
    return tuple(sorted(self.kernels))

  def pattern_of(self, path: str, plan: StepPlan) -> Pattern:
    """The N:M of a sparse kernel under `plan` (M:M, all kept, before the sparse phase)."""
    target = self.kernels[path][0]
    return plan.pattern(target.name) if plan.sparse else (target.m, target.m)

  def masks(self, params, plan: StepPlan):
    """N:M masks of the sparse kernels for this plan, from |W| of the dense weights.

    Args:
      params: the parameter tree the recipe was bound to (concrete or traced).
      plan: this step's plan (`plan(step)`), which fixes each target's N:M.

    Returns:
      A params-shaped tree of boolean masks (True = kept), None at every dense leaf.
    """
    def leaf(key_path, w):
      path = tree_paths.path_string(key_path)
      if path not in self.kernels:
        return None
      return nm.nm_mask(w, *self.pattern_of(path, plan), self.kernels[path][1])
    return jax.tree_util.tree_map_with_path(leaf, params)

  def apply(self, params, masks, beta):
    """The parameters a model computes with, for any model that takes its parameters as a pytree (a dict,
    an NNX State, an Equinox module): the model-agnostic alternative to the sparse layers.

    Args:
      params: the parameter tree the recipe was bound to.
      masks: `masks(params, plan)` of this step, or None (dense: `params` unchanged).
      beta: `beta(step, plan)` of this step.

    Returns:
      `params` with every sparse kernel replaced by W * (m + (1 - m) beta), whose gradient reaches W
      straight through (layers.mix_straight_through); every other leaf as it is.
    """
    if masks is None:
      return params
    flat_masks = tree_paths.flatten(masks)
    beta = jnp.asarray(beta, jnp.float32)

    def leaf(key_path, w):
      mask = flat_masks.get(tree_paths.path_string(key_path))
      return w if mask is None else layers.mix_straight_through(w, mask, beta)
    return jax.tree_util.tree_map_with_path(leaf, params)

  def all_kept_masks(self, params):
    """All-True masks: the state of the masks before the sparse phase starts."""
    return jax.tree_util.tree_map_with_path(
        lambda kp, w: jnp.ones(w.shape, bool) if tree_paths.path_string(kp) in self.kernels else None, params)

  def collection(self, masks, beta) -> Dict[str, Any]:
    """The 'sparsity' variable collection the sparse layers read.

    Args:
      masks: the tree `masks` returned.
      beta: the scalar value of pruned weights in the forward pass (`beta(step, plan)`).

    Returns:
      {module path...: {'mask': mask, 'beta': beta}}, nested like the parameters, to pass as
      `model.apply({'params': params, 'sparsity': collection}, ...)`.
    """
    flat = {}
    for path, mask in tree_paths.flatten(masks).items():
      module = path.rsplit('/', 1)[0]
      flat[f'{module}/mask'] = mask
      flat[f'{module}/beta'] = beta
    return tree_paths.nest(flat)

  def check_layers(self, apply_fn, params, *args, **kwargs) -> None:
    """Checks, by an abstract forward pass, that every selected kernel belongs to a layer that applies
    its mask (a SparseDense or SparseDenseGeneral), before anything is compiled.

    Args:
      apply_fn: the model's apply (flax linen `model.apply`).
      params: the parameter tree (arrays or ShapeDtypeStructs).
      *args: the model's inputs (e.g. a batch of one); **kwargs: its keyword arguments.

    Raises:
      ValueError: naming the kernels whose layers ignore their masks.
    """
    variables = {'params': params, layers.SPARSITY: self.collection(self.all_kept_masks(params), jnp.zeros(()))}
    _, state = jax.eval_shape(
        lambda v, *a: apply_fn(v, *a, mutable=[layers.SPARSE_LAYERS], **kwargs), variables, *args)
    applied = {p.split('/mask_applied')[0] for p in tree_paths.flatten(state.get(layers.SPARSE_LAYERS, {}))}
    ignored = [p for p in self.sparse_paths if p.rsplit('/', 1)[0] not in applied]
    if ignored:
      raise ValueError(f'These targeted kernels belong to layers that are not sparse-capable (use '
                       f'pgf_sparsity.sparsity.SparseDense / SparseDenseGeneral): {ignored}')

  def transform(self):
    """The optax gradient-flow transformation of this recipe, to put first in the optimizer's chain.

    Returns:
      `nm_gradient_flow(flow, srste_lambda)`; its `update` takes `nm_masks=` and `nm_beta=`.
    """
    return gradient_flow.nm_gradient_flow(self.recipe.flow, self.recipe.srste_lambda)
