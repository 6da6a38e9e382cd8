"""Entry point: python -m pgf_sparsity.main --config=configs/X.py[:args] --workdir=DIR [--config.k=v]."""
import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Training configuration file (file.py:args).',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics.jsonl, TensorBoard and config.json.')
flags.DEFINE_integer('max_steps_this_run', None, 'Stop (checkpointed) after this many steps; rerun to resume.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], 'GPU')  # tf.data only: keep the accelerators for JAX
  import jax  # pylint: disable=g-import-not-at-top
  if os.environ.get('JAX_COORDINATOR_ADDRESS') or os.environ.get('PGF_MULTIHOST'):
    jax.distributed.initialize()
  from pgf_sparsity import train  # pylint: disable=g-import-not-at-top
  logging.info('JAX process %d/%d, devices: %s', jax.process_index(), jax.process_count(), jax.devices())
  try:
    _, results = train.train_and_evaluate(FLAGS.config, FLAGS.workdir,
                                            max_steps_this_run=FLAGS.max_steps_this_run)
  except (ValueError, FileNotFoundError) as e:
    raise app.UsageError(str(e)) from None
  logging.info('Final: %s', results)


if __name__ == '__main__':
  app.run(main)
