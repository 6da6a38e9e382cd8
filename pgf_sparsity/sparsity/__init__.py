"""The method in one place, knowing parameter paths and nothing else of the package.

  nm              N:M masks: exactly N kept per group of M along a kernel's grouping axes
  native          the C++ kernels (nm_mask.cc here, inference's matmul) compiled and registered with XLA
  grouping        the groups of M that masks and packed files share (numpy or JAX)
  schedules       phases (dense, sparse, fine-tune), beta(t) decays, SDGF structure schedules
  gradient_flow   the optax transformation that decides what pruned weights receive
  layers          SparseDense / SparseDenseGeneral: Flax layers computing W * (m + (1 - m) * beta)
  recipe          a recipe from its config block, bound to a parameter tree: plans, masks, beta per step
  tree_paths      parameter trees addressed by '/'-joined path strings

The names below are imported on first use, so that `pgf_sparsity.sparsity.grouping` loads without JAX.
"""
import importlib

_WHERE = {
    'FLOWS': 'gradient_flow', 'nm_gradient_flow': 'gradient_flow',
    'SparseDense': 'layers', 'SparseDenseGeneral': 'layers',
    'nm_mask': 'nm',
    'RECIPES': 'recipe', 'BoundRecipe': 'recipe', 'Recipe': 'recipe', 'Schedule': 'recipe', 'StepPlan': 'recipe',
    'Target': 'recipe',
    'sdgf_patterns': 'schedules',
}
__all__ = sorted(_WHERE)


def __getattr__(name):
  if name in _WHERE:
    return getattr(importlib.import_module(f'{__name__}.{_WHERE[name]}'), name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
