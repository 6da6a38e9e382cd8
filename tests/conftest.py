"""Shared test setup: quiet TensorFlow, CPU only, one compilation cache per test session."""
import atexit
import os
import shutil
import tempfile

import pytest

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# Tests compile far more than they run: XLA's slower-to-compile optimisations cost more than they save here
# (the suite ~20% faster); numerics change at float round-off only. Benchmarks and runs keep them.
os.environ.setdefault('JAX_DISABLE_MOST_OPTIMIZATIONS', '1')
# For the same reason, XLA:CPU's older loop emitters instead of its MLIR fusion emitters, and one codegen
# thread (the pytest workers already use every core): a train step compiles in about a third of the CPU time.
os.environ['XLA_FLAGS'] = ' '.join([os.environ.get('XLA_FLAGS', ''), '--xla_cpu_use_fusion_emitters=false',
                                    '--xla_cpu_parallel_codegen_split_count=1']).strip()
# Tests build the same train steps again and again (a run and its resumption, the robustness tests'
# subprocess runs), each compiled anew. A persistent compilation cache for the session, shared by the pytest
# workers and every process they start (through the environment), compiles each such step once. Only
# compilations over half a second are cached (the steps, not the thousands of small jits), and no maximum
# size is set: with one, every write scans the whole cache under a file lock.
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(prefix='pgf_sparsity_tests_compiled_')
  atexit.register(shutil.rmtree, os.environ['JAX_COMPILATION_CACHE_DIR'], ignore_errors=True)
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.5')


def pytest_sessionfinish(session, exitstatus):
  """In CI (CI=true), a skipped test fails the run: the parity checks against PyTorch and transformers, which
  skip where those are missing, must run there (scripts/setup.sh installs them or stops)."""
  reporter = session.config.pluginmanager.get_plugin('terminalreporter')
  skipped = reporter.stats.get('skipped', []) if reporter is not None else []
  if os.environ.get('CI') and skipped and exitstatus == 0:
    reporter.write_line(f'CI: {len(skipped)} skipped test(s) count as failures: '
                        + ', '.join(report.nodeid for report in skipped), red=True)
    session.exitstatus = 1


@pytest.fixture
def shared_compiled_steps():
  """The test's training runs of one experiment compile their steps once (helpers.runs_share_compiled_steps)."""
  from helpers import runs_share_compiled_steps  # pylint: disable=g-import-not-at-top
  with runs_share_compiled_steps():
    yield


# scripts/test.sh gives each of its two pytest workers whole files, one file ahead, in collection order. The
# files go longest first (as measured on 2 cores), so that the run ends on short files, with both workers
# busy to the end, rather than one worker alone on a long one.
LONGEST_FILES = ('test_robustness.py', 'test_configs.py', 'test_train.py', 'test_examples.py', 'test_text.py',
                 'test_models.py', 'test_multiprocess.py', 'test_inference.py', 'test_sweep_tools.py', 'test_nm.py',
                 'test_initialise.py', 'test_sharding.py', 'test_packaging.py', 'test_export.py', 'test_tfds.py',
                 'test_house.py', 'test_results.py', 'test_bench_stats.py', 'test_digits_mlp.py', 'test_decoding.py',
                 'test_diagnostics.py')


def pytest_collection_modifyitems(items):
  rank = {name: i for i, name in enumerate(LONGEST_FILES)}
  items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FILES)))  # stable: the rest as collected
