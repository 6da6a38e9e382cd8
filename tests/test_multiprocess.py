"""Multi-process training for real: local processes joined by jax.distributed on loopback, FSDP state
sharded across them, SIGTERM on one process, resumption, and the parameters of a single-process run."""
import json
import os
import socket
import subprocess
import sys

import numpy as np

from helpers import ROOT, env_with_devices, softmax_ignores

STEPS = 30  # three phases, a stop by SIGTERM, periodic saves before and after it
WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'multiprocess_worker.py')


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _launch(num_processes: int, devices: int, workdir, out, *, sigterm_process=None):
  port = _free_port()
  # The suite's XLA flags (compiling is most of a launch's time) and `devices` CPU devices per process.
  env = dict(env_with_devices(devices), PYTHONPATH=ROOT)
  procs = [subprocess.Popen([sys.executable, WORKER, str(i), str(num_processes), str(STEPS), str(port),
                             str(workdir), str(out)] + (['sigterm'] if i == sigterm_process else []),
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(num_processes)]
  for p in procs:
    # generous: a gloo pair beside the other pytest worker on 2 cores ran 2-3x its time alone (128 s)
    output, _ = p.communicate(timeout=900)
    assert p.returncode == 0, output[-3000:]
  results = [json.loads(open(f'{out}.{i}.json').read()) for i in range(num_processes)]
  # Decoded texts (for BLEU, F1, ...) gathered from every process, in process order, on every process.
  expected = [f'process {p}: {i} ü' for p in range(num_processes) for i in range(p + 1)]
  assert all(r.pop('texts') == expected for r in results), results
  return results


def test_two_processes_fsdp_sigterm_on_one_resume_equals_one_process(tmp_path):
  single = _launch(1, 4, tmp_path / 'single', tmp_path / 'single_out')
  assert single == [{'step': STEPS, 'preempted': False}]

  workdir = tmp_path / 'shared'
  first = _launch(2, 2, workdir, tmp_path / 'first', sigterm_process=1)
  # Both processes stopped at the same step, the one the checkpoint holds.
  assert first[0] == first[1] and first[0]['preempted'], first
  stopped = first[0]['step']
  assert 0 < stopped < STEPS
  assert stopped in [int(d) for d in os.listdir(workdir / 'checkpoints')]

  second = _launch(2, 2, workdir, tmp_path / 'second')
  assert second == [{'step': STEPS, 'preempted': False}] * 2
  resumed, reference = np.load(tmp_path / 'second.npz'), np.load(tmp_path / 'single_out.npz')
  assert sorted(resumed.files) == sorted(reference.files)
  for key in reference.files:
    if softmax_ignores(key):
      continue
    scale = np.abs(reference[key]).max()  # measured: within 3e-6 of the scale (stopped at 11, 13)
    assert np.abs(resumed[key] - reference[key]).max() <= 1e-5 * scale, key
  # Metrics come from process 0 alone: one record per logged step, none repeated by the resumption.
  records = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  train_steps = [r['step'] for r in records if r['split'] == 'train']
  assert train_steps == sorted(set(train_steps)) and train_steps[-1] == STEPS
