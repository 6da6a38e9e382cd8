"""Loading config files by path, as main.py does."""
import os


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(name: str, arg: str = ''):
  """configs/<name>.py:<arg> as a ConfigDict (unlocked, for test overrides)."""
  from pgf_sparsity import config_lib  # pylint: disable=g-import-not-at-top
  return config_lib.from_file(os.path.join(ROOT, 'configs', f'{name}.py'), arg)


def build_experiment(config):
  """(Experiment, data pipeline) of a config, as train_and_evaluate builds them."""
  from pgf_sparsity import experiment  # pylint: disable=g-import-not-at-top
  return experiment.from_config(config)
