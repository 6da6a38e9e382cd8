"""pgf_sparsity: N:M sparse training of Transformers by Progressive Gradient Flow, in JAX.

The method lives in `pgf_sparsity.sparsity`; training infrastructure (train, steps, optim, checkpoints),
models and data each in their own module or subpackage."""
from pgf_sparsity.sparsity import (BoundRecipe, Recipe, SparseDense, SparseDenseGeneral, nm_gradient_flow,
                                   nm_mask, sdgf_patterns)

__all__ = ['BoundRecipe', 'Recipe', 'SparseDense', 'SparseDenseGeneral', 'nm_gradient_flow', 'nm_mask',
           'sdgf_patterns']
__version__ = '0.1.0'
