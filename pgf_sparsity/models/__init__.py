"""Model zoo: every linear layer that a sparsity target may select is a SparseDense."""
from pgf_sparsity.models import swinv2
from pgf_sparsity.models import t5
from pgf_sparsity.models import vit

MODELS = {'vit': vit.from_config, 'swinv2': swinv2.from_config, 't5': t5.from_config}
# The model key that the data's output size (classes, vocabulary) fills when the config leaves it None.
OUTPUT_SIZE_KEY = {'vit': 'num_classes', 'swinv2': 'num_classes', 't5': 'vocab_size'}


def build(config, output_size: int):
  """The flax module named by config.name ('vit', 'swinv2' or 't5'), sized by its variant and overrides."""
  config = dict(config)
  name = config['name'] if 'name' in config else None
  if name not in MODELS:
    raise ValueError(f'Unknown model.name {name!r}; choose one of {sorted(MODELS)}.')
  if config.setdefault(OUTPUT_SIZE_KEY[name], None) is None:  # the data's size, unless the config sets it
    config[OUTPUT_SIZE_KEY[name]] = output_size
  return MODELS[name](config)
