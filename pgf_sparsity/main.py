"""Entry point: python -m pgf_sparsity.main --config=configs/X.py[:args] --workdir=DIR [--config.k=v]."""
import os
import sys
import traceback

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')  # before anything loads TensorFlow's C++ runtime
# TensorFlow only runs the input pipeline here (no matmuls or convolutions for oneDNN to speed up); its notice
# that oneDNN is on goes through absl logging, which TF_CPP_MIN_LOG_LEVEL no longer silences (TF 2.21).
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')

from pgf_sparsity.training import host_memory  # pylint: disable=g-import-not-at-top,wrong-import-position

host_memory.keep_freed_memory_on_cpu()  # before JAX starts: XLA's per-step buffers stay mapped

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags
from absl import logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Training configuration file (file.py:args).',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics.jsonl, TensorBoard and config.json.')
flags.DEFINE_integer('max_steps_this_run', None, 'Stop (checkpointed) after this many steps; rerun to resume.')
flags.DEFINE_bool('force_resume', False, 'Continue a workdir whose run used another config.')
flags.mark_flags_as_required(['config', 'workdir'])


def _one_line(error: BaseException) -> str:
  """The informative line of an error (config_flags wraps config-file errors with their traceback)."""
  lines = [l.strip() for l in str(error).splitlines() if l.strip()]
  for line in reversed(lines):
    for prefix in ('ValueError: ', 'FileNotFoundError: ', 'KeyError: ', 'TypeError: ', 'AttributeError: '):
      if line.startswith(prefix):
        return line[len(prefix):]
  if any('No such file or directory' in l for l in lines):
    return next(l for l in lines if 'No such file or directory' in l)
  return lines[-1] if lines else type(error).__name__


def _unknown_key(error: AttributeError) -> str:
  """ml_collections raises AttributeError(KeyError("'key'\\nDid you mean ...?")): its text, not its repr."""
  inner = error.args[0] if error.args else error
  text = inner.args[0] if isinstance(inner, KeyError) and inner.args else inner
  return 'unknown config key in an override: ' + '. '.join(l.strip() for l in str(text).splitlines() if l.strip())


def _missing_config_file(argv) -> str:
  """The file named by --config=FILE[:args] when it does not exist, else ''."""
  for arg in argv:
    if arg.startswith('--config='):
      path = arg[len('--config='):].split(':', 1)[0]
      return path if path and not os.path.isfile(path) else ''
  return ''


def parse_flags(argv):
  """absl parsing, plus the config file and its overrides, with bad input reported on one line."""
  missing = _missing_config_file(argv)
  if missing:
    _fail(f'error: config file {missing!r} does not exist (No such file).', 2)
  try:
    rest = FLAGS(argv)
    config = FLAGS.config  # config_flags loads the file and applies --config.* overrides lazily
    if config is None:
      raise ValueError('--config is required')
    config.keys()  # a config that failed to load raises only when used
  except (flags.Error, ValueError, KeyError, TypeError, AttributeError, OSError) as e:
    unknown_key = isinstance(e, AttributeError) and '--config.' in ' '.join(argv)
    _fail(f'error: {_unknown_key(e) if unknown_key else _one_line(e)}', 2)
  return rest


def quiet_libraries() -> None:
  """Library INFO chatter (orbax, clu, absl) stays off unless asked for with --verbosity or
  --alsologtostderr; warnings and errors still show. Orbax's writer threads log each failed write with its
  traceback before the same error reaches the loop, which reports it in one line: those records are dropped."""
  if not FLAGS['verbosity'].present and not FLAGS.alsologtostderr:
    logging.set_verbosity(logging.WARNING)
  logging.get_absl_logger().addFilter(_drop_orbax_tracebacks)


def _drop_orbax_tracebacks(record) -> bool:
  """False for a record carrying an exception raised inside orbax (its writer threads')."""
  trace = record.exc_info[2] if record.exc_info else None
  files = [record.pathname] + [frame.f_code.co_filename for frame, _ in traceback.walk_tb(trace)]
  return not (record.exc_info and any(f'{os.sep}orbax{os.sep}' in f for f in files))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  quiet_libraries()
  import jax  # pylint: disable=g-import-not-at-top
  if os.environ.get('JAX_COORDINATOR_ADDRESS') or os.environ.get('PGF_MULTIHOST'):
    jax.distributed.initialize()
  from pgf_sparsity.training import checkpoints, console, train  # pylint: disable=g-import-not-at-top
  console.to_stdout()
  try:
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir, max_steps_this_run=FLAGS.max_steps_this_run,
                             force_resume=FLAGS.force_resume)
  except (ValueError, FileNotFoundError) as e:  # bad input: one line saying what to fix
    _fail(f'error: {e}', 2)
  except (train.NonFiniteError, checkpoints.NoUsableCheckpointError) as e:
    _fail(f'error: {e}', 1)
  except checkpoints.WriteFailedError as e:
    # The run's own files are closed and its lock released by now; what is left are orbax's abandoned writes,
    # which Python's shutdown would report one by one: exit without it.
    sys.stderr.write(' '.join(f'error: {e}'.split()) + '\n')
    sys.stdout.flush(), sys.stderr.flush()
    os._exit(1)  # pylint: disable=protected-access


def _fail(message: str, code: int):
  sys.stderr.write(' '.join(message.split()) + '\n')
  sys.exit(code)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
