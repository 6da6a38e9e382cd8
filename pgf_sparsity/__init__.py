"""pgf_sparsity: N:M sparse training of Transformers by Progressive Gradient Flow, in JAX."""
from pgf_sparsity.gradient_flow import nm_gradient_flow
from pgf_sparsity.layers import SparseDense, SparseDenseGeneral
from pgf_sparsity.nm import nm_mask
from pgf_sparsity.schedules import sdgf_patterns
from pgf_sparsity.sparsity import Sparsity

__all__ = ['nm_gradient_flow', 'nm_mask', 'sdgf_patterns', 'SparseDense', 'SparseDenseGeneral', 'Sparsity']
__version__ = '0.1.0'
