"""Loading config files by path, as main.py does."""
import os


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(name: str, arg: str = ''):
  """configs/<name>.py:<arg> as a ConfigDict (unlocked, for test overrides)."""
  path = os.path.join(ROOT, 'configs', f'{name}.py')
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location(f'configs_{name}', path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(arg)


def build_experiment(config):
  """(Experiment, data pipeline) of a config, as train_and_evaluate builds them."""
  from pgf_sparsity import experiment  # pylint: disable=g-import-not-at-top
  return experiment.from_config(config)
