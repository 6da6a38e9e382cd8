"""The examples: PGF added to a Flax NNX, an Equinox, a plain-JAX and a Flax linen model, each trained on
sklearn's digits. Their final weights are read and counted group by group: exactly N kept of every M."""
import importlib
import math
import os
import re
import sys

import numpy as np
import pytest

from helpers import ROOT
from pgf_sparsity.sparsity import RECIPES

sys.path.insert(0, os.path.join(ROOT, 'examples'))
EXAMPLES = {name: importlib.import_module(name)
            for name in ('nnx_digits', 'equinox_digits', 'plain_jax_digits', 'linen_digits')}
DEFAULT_PATTERN = {'nnx_digits': (1, 8), 'equinox_digits': (2, 4), 'plain_jax_digits': (1, 8),
                   'linen_digits': (1, 8)}


def _kept_per_group(weight: np.ndarray, target, m: int) -> np.ndarray:
  """Non-zeros per group of M along the kernel's input axes, from the weights themselves."""
  in_ndim = target.get('in_ndim', 1)
  if target.get('layout', 'in_out') == 'out_in':
    weight = weight.reshape(-1, math.prod(weight.shape[-in_ndim:])).T
  else:
    weight = weight.reshape(math.prod(weight.shape[:in_ndim]), -1)
  return np.count_nonzero(weight.reshape(-1, m, weight.shape[-1]), axis=1)


def _assert_exactly_n_m(module, weights, n: int, m: int):
  checked = 0
  for name, target in module.TARGETS.items():
    for path, weight in weights.items():
      if re.fullmatch(target['regex'], path):
        kept = _kept_per_group(weight, target, m)
        assert (kept == n).all(), (name, path, np.unique(kept))
        checked += 1
  assert checked >= 2, sorted(weights)


@pytest.mark.parametrize('name', sorted(EXAMPLES))
def test_each_example_learns_and_ends_exactly_n_m(name):
  module = EXAMPLES[name]
  result = module.main(['--steps=300'])
  losses = result['losses']
  assert np.mean(losses[-30:]) < 0.5 * np.mean(losses[:30]), (losses[:5], losses[-5:])
  assert result['accuracy'] > 0.7
  _assert_exactly_n_m(module, result['weights'], *DEFAULT_PATTERN[name])


@pytest.mark.parametrize('name', sorted(EXAMPLES))
@pytest.mark.parametrize('recipe,flow', [(r, 'ste' if r == 'srste' else 'decayed') for r in RECIPES]
                         + [('mdgf_exponential', 'ste'), ('sdgf_geometric', 'ste')])
def test_every_recipe_and_flow_runs_from_each_example(name, recipe, flow):
  module = EXAMPLES[name]
  result = module.main([f'--recipe={recipe}', f'--flow={flow}', '--pattern=1:4', '--steps=40'])
  assert np.isfinite(result['losses']).all()
  if recipe != 'dense':
    _assert_exactly_n_m(module, result['weights'], 1, 4)


def test_the_nnx_example_resumed_from_its_checkpoint_ends_as_an_uninterrupted_run(tmp_path):
  module = EXAMPLES['nnx_digits']
  whole = module.main(['--steps=120'])
  checkpoint = str(tmp_path / 'nnx.npz')
  first = module.main(['--steps=120', '--stop_at=50', f'--checkpoint={checkpoint}'])
  assert first['step'] == 50
  second = module.main(['--steps=120', f'--checkpoint={checkpoint}'])
  assert second['step'] == 120
  assert first['losses'] + second['losses'] == whole['losses']
  for path, weight in whole['weights'].items():
    np.testing.assert_array_equal(second['weights'][path], weight, err_msg=path)
