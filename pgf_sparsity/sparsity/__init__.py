"""The method in one place: N:M masks (nm), phases and decay schedules (schedules), the optax gradient-flow
transformation (gradient_flow), the sparse Flax layers (layers) and the recipe that ties them to a config
and a parameter tree (recipe). Nothing here knows about training loops, data or particular models."""
from pgf_sparsity.sparsity.gradient_flow import FLOWS, nm_gradient_flow
from pgf_sparsity.sparsity.layers import SparseDense, SparseDenseGeneral
from pgf_sparsity.sparsity.nm import nm_mask
from pgf_sparsity.sparsity.recipe import RECIPES, BoundRecipe, Recipe, Schedule, StepPlan, Target
from pgf_sparsity.sparsity.schedules import sdgf_patterns

__all__ = ['FLOWS', 'RECIPES', 'BoundRecipe', 'Recipe', 'Schedule', 'SparseDense', 'SparseDenseGeneral',
           'StepPlan', 'Target', 'nm_gradient_flow', 'nm_mask', 'sdgf_patterns']
