"""A sparse-training recipe from a JSON-serialisable config: targets, phases, patterns, beta, masks.

This is the glue between the pure pieces (nm, schedules, gradient_flow, layers) and a training loop:

  sp = Sparsity(config.sparsity, total_steps)
  sp.bind(params)                       # resolve regex targets, validate every pattern before compiling
  plan = sp.plan(step)                  # static, hashable: phase, frame, N:M per target, beta kind
  masks = sp.masks(params, plan)        # once per step, shared by the forward pass and the optimizer
  beta = sp.beta(step, plan)            # traced
  model.apply({'params': params, 'sparsity': sp.collection(masks, beta)}, x)
  tx.update(grads, opt_state, params, nm_masks=masks, nm_beta=beta)

Recipes (SPEC section 4): dense, static, srste, mdgf_linear, mdgf_exponential, sdgf_stepwise,
sdgf_geometric, sdgf_custom. Config keys:
  recipe, gradient_flow ('decayed' | 'ste'), alpha, srste_lambda, group_axis ('in' | 'out'),
  targets: {name: {regex, n, m, in_ndim}}, sdgf_custom: {name: [[n, m], ...]},
  dense_steps | dense_fraction | dense_epochs, finetune_steps | finetune_fraction | finetune_epochs,
  mask_update_every.
"""
import dataclasses
import re
from typing import Any, Dict, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from pgf_sparsity import gradient_flow as gradient_flow_lib
from pgf_sparsity import layers
from pgf_sparsity import nm
from pgf_sparsity import schedules
from pgf_sparsity import tree_paths

RECIPES = ('dense', 'static', 'srste', 'mdgf_linear', 'mdgf_exponential', 'sdgf_stepwise',
           'sdgf_geometric', 'sdgf_custom')
_BETA_KIND = {'mdgf_linear': 'linear', 'mdgf_exponential': 'exponential'}
_TOP_KEYS = {'recipe', 'gradient_flow', 'alpha', 'srste_lambda', 'group_axis', 'targets', 'sdgf_custom',
             'dense_steps', 'dense_fraction', 'dense_epochs', 'finetune_steps', 'finetune_fraction',
             'finetune_epochs', 'mask_update_every'}
_TARGET_KEYS = {'regex', 'n', 'm', 'in_ndim'}


@dataclasses.dataclass(frozen=True)
class Target:
  name: str
  regex: str
  n: int
  m: int
  in_ndim: int = 1


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

  def pattern(self, target: str) -> Tuple[int, int]:
    for name, n, m in self.patterns:
      if name == target:
        return n, m
    raise KeyError(target)


def _as_dict(config) -> Dict[str, Any]:
  if config is None:
    return {}
  return config.to_dict() if hasattr(config, 'to_dict') else dict(config)


class Sparsity:
  """One recipe's schedule and masks for a run of `total_steps` steps."""

  def __init__(self, config: Mapping[str, Any], total_steps: int, steps_per_epoch: Optional[int] = None):
    cfg = _as_dict(config)
    unknown = set(cfg) - _TOP_KEYS
    if unknown:
      raise ValueError(f'Unknown sparsity config keys {sorted(unknown)}; known keys: {sorted(_TOP_KEYS)}.')
    self.recipe = cfg.get('recipe', 'dense')
    if self.recipe not in RECIPES:
      raise ValueError(f'Unknown sparsity.recipe {self.recipe!r}; choose one of {RECIPES}.')
    self.semantics = cfg.get('gradient_flow', 'decayed')
    if self.semantics not in gradient_flow_lib.SEMANTICS:
      raise ValueError(f'sparsity.gradient_flow must be one of {gradient_flow_lib.SEMANTICS}, '
                       f'got {self.semantics!r}.')
    self.alpha = float(cfg.get('alpha', 0.0) or 0.0)
    self.srste_lambda = float(cfg.get('srste_lambda', 2e-4)) if self.recipe == 'srste' else 0.0
    self.group_axis = cfg.get('group_axis', 'in')
    if self.group_axis not in ('in', 'out'):
      raise ValueError(f"sparsity.group_axis must be 'in' or 'out', got {self.group_axis!r}.")
    self.mask_update_every = int(cfg.get('mask_update_every', 1))
    if self.mask_update_every < 1:
      raise ValueError(f'sparsity.mask_update_every must be >= 1, got {self.mask_update_every}.')
    if self.recipe.startswith('mdgf') and not self.alpha > 0.0:
      raise ValueError(f'{self.recipe} needs sparsity.alpha > 0 (the decay coefficient), got {self.alpha}.')
    if self.recipe == 'srste' and self.semantics != 'ste':
      raise ValueError('recipe srste is defined on the straight-through gradient: set '
                       'sparsity.gradient_flow="ste".')
    if self.recipe == 'srste' and not self.srste_lambda > 0.0:
      raise ValueError(f'recipe srste needs sparsity.srste_lambda > 0, got {self.srste_lambda}.')

    self.targets = self._parse_targets(cfg.get('targets') or {})
    if self.recipe != 'dense' and not self.targets:
      raise ValueError(f'recipe {self.recipe} needs at least one entry in sparsity.targets.')
    self._frames = self._parse_frames(cfg.get('sdgf_custom') or {})

    duration = dict(total_steps=total_steps, steps_per_epoch=steps_per_epoch)
    dense = schedules.steps_from(steps=cfg.get('dense_steps'), fraction=cfg.get('dense_fraction'),
                                 epochs=cfg.get('dense_epochs'), name='sparsity dense phase', **duration)
    finetune = schedules.steps_from(steps=cfg.get('finetune_steps'), fraction=cfg.get('finetune_fraction'),
                                    epochs=cfg.get('finetune_epochs'), name='sparsity fine-tune phase',
                                    **duration)
    if self.recipe == 'dense':
      dense, finetune = total_steps, 0
    self.phases = schedules.Phases(total_steps, dense, finetune)
    self._bound: Optional[Dict[str, Tuple[Target, Tuple[int, ...]]]] = None

  def _parse_targets(self, raw) -> Tuple[Target, ...]:
    targets = []
    for name, spec in _as_dict(raw).items():
      spec = _as_dict(spec)
      unknown = set(spec) - _TARGET_KEYS
      if unknown:
        raise ValueError(f'Unknown keys {sorted(unknown)} in sparsity.targets.{name}; known: '
                         f'{sorted(_TARGET_KEYS)}.')
      missing = {'regex', 'n', 'm'} - set(spec)
      if missing:
        raise ValueError(f'sparsity.targets.{name} needs {sorted(missing)}.')
      try:
        nm.validate_pattern(spec['n'], spec['m'])
        re.compile(spec['regex'])
      except (ValueError, re.error) as e:
        raise ValueError(f'sparsity.targets.{name}: {e}') from None
      in_ndim = spec.get('in_ndim', 1)
      if isinstance(in_ndim, bool) or not isinstance(in_ndim, int) or in_ndim < 1:
        raise ValueError(f'sparsity.targets.{name}.in_ndim must be an integer >= 1, got {in_ndim!r}.')
      targets.append(Target(name, spec['regex'], spec['n'], spec['m'], in_ndim))
    return tuple(targets)

  def _parse_frames(self, custom) -> Dict[str, Tuple[Tuple[int, int], ...]]:
    custom = _as_dict(custom)
    if custom and self.recipe != 'sdgf_custom':
      raise ValueError('sparsity.sdgf_custom is only used by recipe sdgf_custom.')
    frames = {}
    for t in self.targets:
      if self.recipe.startswith('sdgf'):
        kind = self.recipe.split('_', 1)[1]
        if kind == 'custom' and t.name not in custom:
          raise ValueError(f'recipe sdgf_custom needs sparsity.sdgf_custom.{t.name}: a list of [n, m].')
        frames[t.name] = tuple(schedules.sdgf_patterns(kind, t.n, t.m, custom.get(t.name)))
      else:
        frames[t.name] = ((t.n, t.m),)
    counts = {len(f) for f in frames.values()}
    if len(counts) > 1:
      raise ValueError(f'All targets need the same number of SDGF frames, got {frames}.')
    return frames

  @property
  def num_frames(self) -> int:
    return max((len(f) for f in self._frames.values()), default=1)

  def frame_patterns(self):
    """Every pattern each target will use, in order: {target: ((n, m), ...)}."""
    return dict(self._frames)

  # ---- plans (host side) ----
  def plan(self, step: int) -> StepPlan:
    phase = self.phases.phase(step)
    if phase == schedules.DENSE:
      return StepPlan(phase, 0, (), 'zero')
    if phase == schedules.FINETUNE:
      return self.final_plan()
    frame = schedules.frame_index(self.phases.sparse_clock(step), self.phases.sparse_steps, self.num_frames)
    patterns = tuple((t.name, *self._frames[t.name][frame]) for t in self.targets)
    return StepPlan(phase, frame, patterns, _BETA_KIND.get(self.recipe, 'zero'))

  def final_plan(self) -> StepPlan:
    """Binary masks at the target N:M: fine-tuning, evaluation and export (dense for the dense recipe)."""
    if self.recipe == 'dense':
      return StepPlan(schedules.DENSE, 0, (), 'zero')
    return StepPlan(schedules.FINETUNE, self.num_frames, tuple((t.name, t.n, t.m) for t in self.targets), 'zero')

  def plan_end(self, step: int) -> int:
    """First step after `step` with another plan (or total_steps): the host loop runs one plan at a time."""
    p = self.phases
    if step < p.sparse_start:
      return p.sparse_start
    if step >= p.finetune_start:
      return p.total_steps
    frame = self.plan(step).frame
    nxt = p.sparse_start + schedules.frame_start(frame + 1, p.sparse_steps, self.num_frames)
    return min(nxt, p.finetune_start) if frame + 1 < self.num_frames else p.finetune_start

  def is_refresh_step(self, step, plan: StepPlan):
    """Whether masks are recomputed at `step` (traced), given mask_update_every and the plan's start."""
    if self.mask_update_every == 1:
      return True
    t = self.phases.sparse_clock(step)
    return (t % self.mask_update_every == 0) | (step == self.plan_start(plan))

  def plan_start(self, plan: StepPlan) -> int:
    p = self.phases
    if plan.phase == schedules.FINETUNE:
      return p.finetune_start
    return p.sparse_start + schedules.frame_start(plan.frame, p.sparse_steps, self.num_frames)

  # ---- traced ----
  def beta(self, step, plan: StepPlan):
    return schedules.beta(plan.beta_kind, self.phases.sparse_clock(step), self.alpha)

  # ---- parameters ----
  def bind(self, params) -> Dict[str, Tuple[Target, Tuple[int, ...]]]:
    """Resolves the targets on a parameter tree (arrays or ShapeDtypeStructs) and validates every
    pattern of every frame against every selected kernel, before anything is compiled."""
    flat = tree_paths.flatten(params)
    bound = {}
    for t in self.targets:
      regex = re.compile(t.regex)
      hits = [p for p in flat if regex.fullmatch(p)]
      if not hits:
        raise ValueError(f'sparsity.targets.{t.name}: regex {t.regex!r} matches no parameter. '
                         f'Some parameter paths: {sorted(flat)[:8]}')
      for path in hits:
        if path in bound:
          raise ValueError(f'Parameter {path} is selected by targets {bound[path][0].name} and {t.name}.')
        if path.rsplit('/', 1)[-1] != 'kernel':
          raise ValueError(f'sparsity.targets.{t.name} selects {path}; only the kernels of sparse layers '
                           '(SparseDense, SparseDenseGeneral) can be N:M sparse.')
        shape = flat[path].shape
        if len(shape) <= t.in_ndim:
          raise ValueError(f'{path} has shape {shape}: in_ndim={t.in_ndim} leaves no output axis.')
        axes = (tuple(range(t.in_ndim)) if self.group_axis == 'in'
                else tuple(range(t.in_ndim, len(shape))))
        for n, m in self._frames[t.name]:
          try:
            nm.check_groupable(shape, n, m, axes)
          except ValueError as e:
            raise ValueError(f'sparsity.targets.{t.name} at {path}, pattern {n}:{m}: {e}') from None
        bound[path] = (t, axes)
    self._targeted = tuple(sorted(bound))  # the layers the targets name, sparse or not (dense recipe)
    self._bound = bound if self.recipe != 'dense' else {}
    return self._bound

  @property
  def sparse_paths(self) -> Tuple[str, ...]:
    if self._bound is None:
      raise RuntimeError('Call Sparsity.bind(params) first.')
    return tuple(sorted(self._bound))

  @property
  def bound(self) -> Dict[str, Tuple[Target, Tuple[int, ...]]]:
    """{kernel path: (its target, its grouping axes)} of the sparse kernels."""
    if self._bound is None:
      raise RuntimeError('Call Sparsity.bind(params) first.')
    return dict(self._bound)

  @property
  def targeted_paths(self) -> Tuple[str, ...]:
    """Kernels the targets select, also under the dense recipe (for diagnostics and comparisons)."""
    if self._bound is None:
      raise RuntimeError('Call Sparsity.bind(params) first.')
    return self._targeted

  def all_kept_masks(self, params) -> Dict[str, jax.Array]:
    """All-True masks: the state of the masks before the sparse phase starts."""
    flat = tree_paths.flatten(params)
    return {p: jnp.ones(flat[p].shape, bool) for p in self.sparse_paths}

  def masks(self, params, plan: StepPlan) -> Dict[str, jax.Array]:
    """N:M masks of every sparse kernel for this plan, from |W| of the dense weights."""
    flat = tree_paths.flatten(params)
    out = {}
    for path in self.sparse_paths:
      target, axes = self._bound[path]
      n, m = plan.pattern(target.name) if plan.sparse else (target.m, target.m)
      out[path] = nm.nm_mask(flat[path], n, m, axes)
    return out

  def collection(self, masks: Mapping[str, jax.Array], beta) -> Dict[str, Any]:
    """The 'sparsity' variable collection the sparse layers read."""
    flat = {}
    for path, mask in masks.items():
      module = path.rsplit('/', 1)[0]
      flat[f'{module}/mask'] = mask
      flat[f'{module}/beta'] = beta
    return tree_paths.nest(flat)

  def check_layers(self, apply_fn, params, *args, **kwargs) -> None:
    """Fails unless every selected kernel belongs to a layer that applies its mask."""
    masks = self.all_kept_masks(params)
    variables = {'params': params, layers.SPARSITY: self.collection(masks, jnp.zeros(()))}
    _, state = jax.eval_shape(
        lambda v, *a: apply_fn(v, *a, mutable=[layers.SPARSE_LAYERS], **kwargs), variables, *args)
    applied = {p.split('/mask_applied')[0] for p in tree_paths.flatten(state.get(layers.SPARSE_LAYERS, {}))}
    ignored = [p for p in masks if p.rsplit('/', 1)[0] not in applied]
    if ignored:
      raise ValueError(f'These targeted kernels belong to layers that are not sparse-capable (use '
                       f'pgf_sparsity.layers.SparseDense / SparseDenseGeneral): {ignored}')

  def transform(self):
    """The optax gradient-flow transformation of this recipe (identity for dense)."""
    targets = [re.escape(p) for p in self.sparse_paths]
    return gradient_flow_lib.nm_gradient_flow(targets, self.semantics, self.srste_lambda)

  # ---- reporting ----
  def summary(self, params, masks, plan: StepPlan, beta, previous_masks=None) -> Dict[str, float]:
    """Realised N:M, total sparsity, beta, pattern and mask flip rate (host-side floats)."""
    out = {'beta': float(beta) if plan.sparse else 1.0}
    if not self._bound:
      return out
    flat = tree_paths.flatten(params)
    zeros = total = flips = 0
    for path in self.sparse_paths:
      target, axes = self._bound[path]
      hardened = np.asarray(flat[path]) * np.asarray(masks[path])
      n, m = plan.pattern(target.name) if plan.sparse else (target.m, target.m)
      counts = np.asarray(nm.group_counts(jnp.asarray(hardened != 0), m, axes))
      out[f'nm_exact/{path}'] = float(np.mean(counts == n))
      zeros += int(np.sum(hardened == 0))
      total += hardened.size
      if previous_masks is not None:
        flips += int(np.sum(np.asarray(masks[path]) != np.asarray(previous_masks[path])))
    for name, n, m in plan.patterns:
      out[f'pattern_n/{name}'] = float(n)
      out[f'pattern_m/{name}'] = float(m)
    out['sparsity'] = zeros / total
    if previous_masks is not None:
      out['mask_flip_rate'] = flips / total
    return out
