"""One process of a run on loopback, for test_multiprocess.py (not a test itself).

  python tests/multiprocess_worker.py PROCESS_ID NUM_PROCESSES STEPS PORT WORKDIR OUT_PREFIX [sigterm]

Run with the environment of `helpers.env_with_devices` (this process's CPU devices). Trains the digits
config for STEPS steps with FSDP over all devices, each process on its own share of every batch, in the
shared WORKDIR; writes OUT_PREFIX.PROCESS_ID.json (the step it stopped at, whether it was preempted) and,
from process 0, OUT_PREFIX.npz (the final parameters, gathered). With `sigterm`, this process sends itself
SIGTERM once the run has logged its first metrics.
"""
import json
import os
import signal
import sys
import threading
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position


def _sigterm_after_first_log(workdir: str) -> None:
  def wait_and_signal():
    while not os.path.exists(os.path.join(workdir, 'metrics.jsonl')):
      time.sleep(0.01)
    os.kill(os.getpid(), signal.SIGTERM)
  threading.Thread(target=wait_and_signal, daemon=True).start()


def main(argv):
  process_id, num_processes, steps_to_run, port = map(int, argv[1:5])
  workdir, out = argv[5], argv[6]
  if num_processes > 1:
    jax.distributed.initialize(f'localhost:{port}', num_processes, process_id)
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  from helpers import load_config  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  from pgf_sparsity.training import steps, train  # pylint: disable=g-import-not-at-top
  from pgf_sparsity.sparsity import tree_paths
  config = load_config('digits', f'recipe=mdgf_exponential,steps={steps_to_run}')
  config.mesh = {'data': 1, 'fsdp': -1}  # every parameter sharded across both processes
  config.log_every_steps, config.checkpoint_every_steps, config.eval_every_steps = 5, 10, steps_to_run
  if 'sigterm' in argv[7:]:
    _sigterm_after_first_log(workdir)
  state, results = train.train_and_evaluate(config, workdir)
  with open(f'{out}.{process_id}.json', 'w') as f:
    texts = steps.all_processes([f'process {process_id}: {i} ü' for i in range(process_id + 1)])
    json.dump({'step': int(state.step), 'preempted': results['preempted'], 'texts': texts}, f)
  params = multihost_utils.process_allgather(state.params, tiled=True)  # FSDP shards live on both processes
  if process_id == 0:
    np.savez(f'{out}.npz', **{k: np.asarray(v) for k, v in tree_paths.flatten(params).items()})


if __name__ == '__main__':
  main(sys.argv)
