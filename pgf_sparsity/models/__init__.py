"""Model zoo: every linear layer that a sparsity target may select is a SparseDense."""
from pgf_sparsity.models import swinv2
from pgf_sparsity.models import t5
from pgf_sparsity.models import vit

MODELS = {'vit': vit.from_config, 'swinv2': swinv2.from_config, 't5': t5.from_config}


def build(config):
  """The flax module named by config.name ('vit', 'swinv2' or 't5'), sized by its variant and overrides."""
  name = config.get('name')
  if name not in MODELS:
    raise ValueError(f'Unknown model.name {name!r}; choose one of {sorted(MODELS)}.')
  return MODELS[name](config)
