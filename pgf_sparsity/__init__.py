"""pgf_sparsity: N:M sparse training of Transformers by Progressive Gradient Flow, in JAX.

The method lives in `pgf_sparsity.sparsity`; training infrastructure (train, steps, optim, checkpoints),
models and data each in their own module or subpackage. The names below are imported on first use, so
that numpy-only modules (`pgf_sparsity.formats.nm_packing`, the loaders of exported models) work without JAX.
"""
import importlib

_EXPORTS = ('BoundRecipe', 'Recipe', 'SparseDense', 'SparseDenseGeneral', 'nm_gradient_flow', 'nm_mask',
            'sdgf_patterns')
__all__ = list(_EXPORTS)
__version__ = '0.2.0'


def __getattr__(name):
  if name in _EXPORTS:
    return getattr(importlib.import_module('pgf_sparsity.sparsity'), name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
