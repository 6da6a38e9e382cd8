"""Loading config files by path, as main.py does; tfds mock data that leaves the file system alone; runs that
share their compiled steps."""
import contextlib
import os
from unittest import mock


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(name: str, arg: str = ''):
  """configs/<name>.py:<arg> as a ConfigDict (unlocked, for test overrides)."""
  from pgf_sparsity import config_lib  # pylint: disable=g-import-not-at-top
  return config_lib.from_file(os.path.join(ROOT, 'configs', f'{name}.py'), arg)


def env_with_devices(count: int) -> dict:
  """This process's environment (the suite's XLA flags included) for a CPU process with `count` devices."""
  flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={count}".strip()
  return dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS='cpu')


def softmax_ignores(path: str) -> bool:
  """Whether a parameter is the attention's key bias, which softmax ignores (it shifts all of a query's logits
  alike): its gradient is round-off, which Adam scales up to learning-rate-sized steps, so two runs that
  differ only in round-off (sharding, processes) may differ there by that much and stay equal elsewhere."""
  return path.endswith('attention/key/bias')


def build_experiment(config):
  """(Experiment, data pipeline) of a config, as train_and_evaluate builds them."""
  from pgf_sparsity.training import experiment  # pylint: disable=g-import-not-at-top
  return experiment.from_config(config)


@contextlib.contextmanager
def mock_tfds(**kwargs):
  """`tfds.testing.mock_data(**kwargs)`, with the mock data_dir made to exist by a narrower means.

  While `as_dataset` runs, tfds's mock redirects every absolute path of the whole process (`tf.io.gfile` and
  `epath`, in every thread) into a temporary directory, only so that its data_dir exists. An orbax save
  finishing in the background at that moment then writes there and fails (the tmp directory seems to
  vanish): 5 of 6 runs of `vit_i1k:runlocal` saving every 2 steps, 0 of 6 with this mock. Here only the
  existence of that data_dir is faked; real runs never mock, so they never had the problem.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from etils import epath  # pylint: disable=g-import-not-at-top
  from tensorflow_datasets.testing import test_utils  # pylint: disable=g-import-not-at-top
  data_dirs = set()
  path_cls = type(epath.Path('/'))
  original_exists = path_cls.exists

  class DataDirOnly:
    """Stands in for tfds's MockFs inside `as_dataset`, which only adds a file to the data_dir."""

    def __enter__(self):
      return self

    def __exit__(self, *exc):
      return False

    def add_file(self, path):
      data_dirs.add(os.path.dirname(os.fspath(path)))

  def exists(path):
    return os.fspath(path) in data_dirs or original_exists(path)

  # A builder of unprepared data asks GCS for its metadata (disabled in tfds: nothing is fetched) after making
  # an empty temporary directory it never removes: one left in /tmp per builder, hundreds per test session.
  no_bucket = mock.patch.object(tfds.core.DatasetInfo, 'initialize_from_bucket', lambda self: None)
  with mock.patch.object(test_utils, 'MockFs', DataDirOnly), mock.patch.object(path_cls, 'exists', exists), no_bucket:
    with tfds.testing.mock_data(**kwargs):
      yield


@contextlib.contextmanager
def runs_share_compiled_steps():
  """Within the block, training runs of the same experiment (equal completed config, data spec and devices)
  share their jitted steps: a run, its stop and its resumption compile once, as one uninterrupted process
  would. For tests of what a resumption restores and continues, not of compiling (each first run compiles)."""
  from pgf_sparsity.training import steps  # pylint: disable=g-import-not-at-top
  shared = {}
  original_init = steps.CompiledSteps.__init__

  def init(self, exp, packed=None):
    original_init(self, exp, packed)
    if packed is None:
      devices = tuple(device.id for device in exp.mesh.devices.flat)
      key = (exp.config.to_json_best_effort(sort_keys=True), repr(exp.spec), devices, exp.mesh.axis_names)
      self.cache = shared.setdefault(key, self.cache)

  with mock.patch.object(steps.CompiledSteps, '__init__', init):
    yield
