"""Preemption, kill -9 at random points, corrupt checkpoints, non-finite values, incompatible resumes,
and a catalogue of malformed invocations (training and export)."""
import asyncio
import errno
import gc
import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
import types

import jax
import numpy as np
import pytest

from pgf_sparsity.formats import exporting
from pgf_sparsity.training import checkpoints
from pgf_sparsity.training import metric_writers
from pgf_sparsity.training import train

sys.path.insert(0, os.path.dirname(__file__))
from helpers import ROOT, build_experiment, load_config  # noqa: E402

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', JAX_PLATFORMS='cpu')
RUN_ARG = 'recipe=sdgf_stepwise,steps=600'
RUN_FLAGS = ['--config.checkpoint_every_steps=25', '--config.log_every_steps=25', '--config.eval_every_steps=200']


def run_config(arg=RUN_ARG):
  config = load_config('digits', arg)
  config.checkpoint_every_steps, config.log_every_steps, config.eval_every_steps = 25, 25, 200
  return config


def main_cmd(workdir, arg=RUN_ARG, extra=()):
  return [sys.executable, '-m', 'pgf_sparsity.main', f'--config=configs/digits.py:{arg}', f'--workdir={workdir}',
          *RUN_FLAGS, *extra]


def restored_params(config, workdir):
  exp, _ = build_experiment(config)
  ckpt = checkpoints.Checkpointer(str(workdir))
  state, step = ckpt.restore_latest_good(exp.abstract_state())
  ckpt.close()
  return jax.device_get(state.params), step


def assert_same_params(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('uninterrupted')
  state, _ = train.train_and_evaluate(run_config(), str(workdir))
  return jax.device_get(state.params), workdir


def newest_checkpoint(workdir) -> int:
  ckpt_dir = os.path.join(workdir, 'checkpoints')
  return max([0] + ([int(d) for d in os.listdir(ckpt_dir) if d.isdigit()] if os.path.isdir(ckpt_dir) else []))


def wait_for_checkpoint_after(workdir, step, timeout=120):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if newest_checkpoint(workdir) > step:
      return newest_checkpoint(workdir)
    time.sleep(0.05)
  raise TimeoutError('no new checkpoint')


def kill_9_at_random(proc, workdir, rng, most_steps=100):
  """kill -9 at a seeded random time (0-9 s) from the process's start, or as soon as its run has checkpointed
  `most_steps` past where it resumed: on any machine it dies before it finishes the run."""
  deadline, cap = time.time() + rng.uniform(0.0, 9.0), newest_checkpoint(workdir) + most_steps
  while time.time() < deadline and newest_checkpoint(workdir) < cap and proc.poll() is None:
    time.sleep(0.01)
  proc.kill()


@pytest.mark.slow
def test_sigterm_and_kill_9_at_random_points_resume_bit_identical(uninterrupted, tmp_path):
  """A SIGTERM after a checkpoint, then kill -9s at seeded random times from each process's start, so that
  they land in start-up, the restore, steps and saves alike (each before its run could finish); the run then
  finishes bit-identical."""
  reference, _ = uninterrupted
  workdir = str(tmp_path / 'interrupted')
  proc = subprocess.Popen(main_cmd(workdir), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  wait_for_checkpoint_after(workdir, 0)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 0 and 'SIGTERM: saved a checkpoint' in err, err[-2000:]
  rng = random.Random(0)
  for _ in range(4):
    proc = subprocess.Popen(main_cmd(workdir), cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    kill_9_at_random(proc, workdir, rng)
    proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL
  finish = subprocess.run(main_cmd(workdir), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
  assert finish.returncode == 0, finish.stderr[-2000:]
  params, step = restored_params(run_config(), workdir)
  assert step == 600
  assert_same_params(params, reference)
  train_steps = [r['step'] for r in metric_writers.read_jsonl(workdir) if r['split'] == 'train']
  assert train_steps == list(range(25, 601, 25))  # metrics continue: no gaps, no duplicates


@pytest.mark.usefixtures('shared_compiled_steps')
def test_corrupt_checkpoint_falls_back_to_the_previous_good_one(uninterrupted, tmp_path):
  reference, _ = uninterrupted
  workdir = str(tmp_path / 'corrupt')
  config = run_config()
  train.train_and_evaluate(config, workdir, max_steps_this_run=100)
  state_dir = os.path.join(workdir, 'checkpoints', '100', 'state')
  # Damage at seven places in every data file: 64 bytes in the middle of the biggest file once left the
  # checkpoint readable and intact (the file's layout varies from run to run; not every byte of it is read back).
  data_files = [os.path.join(d, f) for d, _, fs in os.walk(state_dir) if os.path.basename(d) == 'd' for f in fs]
  assert data_files
  damage = random.Random(0).randbytes(64)  # seeded: the same damage every run
  for path in data_files:
    size = os.path.getsize(path)
    with open(path, 'r+b') as f:
      for eighth in range(1, 8):
        f.seek(size * eighth // 8)
        f.write(damage[:size - size * eighth // 8])  # not past the end: the file keeps its size
  state, _ = train.train_and_evaluate(config, workdir)
  assert int(state.step) == 600
  assert os.path.isdir(os.path.join(workdir, 'checkpoints_unusable', '100'))
  assert_same_params(jax.device_get(state.params), reference)


@pytest.mark.parametrize('dtype', ['float32', 'bfloat16', 'float16', 'int32', 'uint32', 'int8', 'uint8', 'bool',
                                   'float64', 'int64'])
def test_a_state_checksum_is_the_same_from_numpy_and_from_a_compiled_program(dtype):
  """Arrays in host memory are summed by numpy, others (on accelerators, or spread over processes) by a compiled
  program: a checkpoint saved one way verifies the other way. Each word of each array counts."""
  rng = np.random.default_rng(0)
  with jax.enable_x64(dtype.endswith('64')):
    for shape in [(), (7,), (3, 5), (2, 3, 4), (0, 3)]:
      values = rng.integers(0, 2, shape) if dtype == 'bool' else rng.normal(size=shape) * 100
      x = jax.numpy.asarray(values).astype(dtype)
      host = checkpoints._host_array_checksum(np.asarray(x))
      np.testing.assert_array_equal(host, np.asarray(checkpoints._array_checksum(x)))
      if x.size:
        flipped = np.array(x)
        flipped.reshape(-1).view(np.uint8)[-1] ^= 1  # one bit of the last element
        assert (checkpoints._host_array_checksum(flipped) != host).all()

def test_quieting_abandoned_reads_drops_only_closed_event_loop_refusals(monkeypatch):
  """What orbax's abandoned reads raise (test_sharding's corrupt checkpoint, test_export's damaged directory) is
  dropped, alone or as the cause of another error; every other ignored exception still reaches the previous hook."""
  printed = []
  monkeypatch.setattr(sys, 'unraisablehook', printed.append)
  checkpoints.quiet_abandoned_orbax_work()
  checkpoints.quiet_abandoned_orbax_work()  # installed once
  closed = RuntimeError('Event loop is closed')
  chained = GeneratorExit()
  chained.__cause__ = closed
  cyclic = ValueError('a cycle')
  cyclic.__context__ = cyclic
  for error in (closed, chained, RuntimeError('something else'), cyclic):
    sys.unraisablehook(types.SimpleNamespace(exc_type=type(error), exc_value=error, exc_traceback=None,
                                             err_msg=None, object=None))
  assert [str(u.exc_value) for u in printed] == ['something else', 'a cycle']


def test_quieting_abandoned_reads_drops_only_unawaited_orbax_task_errors(caplog):
  """A read task of orbax's whose failure nobody awaits once the restore has failed: asyncio logs it (with its
  traceback) when it collects the task, unless it is orbax's; another task's unawaited error is still logged."""
  def failing_task(filename):
    namespace = {}
    exec(compile('async def read():\n  raise ValueError("DATA_LOSS: a damaged chunk")\n', filename, 'exec'), namespace)
    loop = asyncio.new_event_loop()
    task = loop.create_task(namespace['read']())
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()
    # Its error read without task.exception(), which would mark it retrieved and silence asyncio's report.
    assert task.done() and isinstance(task._exception, ValueError)  # pylint: disable=protected-access
    del task
    gc.collect()

  checkpoints.quiet_abandoned_orbax_work()
  checkpoints.quiet_abandoned_orbax_work()  # installed once
  assert sum(type(f).__name__ == '_DropAbandonedOrbaxTasks' for f in logging.getLogger('asyncio').filters) == 1
  with caplog.at_level(logging.ERROR, logger='asyncio'):
    failing_task(os.path.join(os.sep, 'venv', 'site-packages', 'orbax', 'checkpoint', 'serialization.py'))
    assert not caplog.records
    failing_task(os.path.join(os.sep, 'venv', 'site-packages', 'other', 'reader.py'))
  assert [r.getMessage().splitlines()[0] for r in caplog.records] == ['Task exception was never retrieved']


@pytest.mark.usefixtures('shared_compiled_steps')
def test_non_finite_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
  """Three good checkpoints, then a learning rate that diverges: the run stops at the non-finite step without
  saving, the newest good checkpoint (15) is kept and finite, and a resume with a sane config continues from it."""
  workdir = str(tmp_path / 'stop')
  config = load_config('digits', 'steps=60')
  config.checkpoint_every_steps = config.log_every_steps = 5
  train.train_and_evaluate(config, workdir, max_steps_this_run=15)
  diverging = load_config('digits', 'steps=60')
  diverging.update(checkpoint_every_steps=5, log_every_steps=5)
  diverging.optimizer.update(learning_rate=1e12, warmup_steps=0)
  with pytest.raises(train.NonFiniteError, match=r'Non-finite loss or gradients at step 1[5-9]; .* checkpoint is step 15'):
    train.train_and_evaluate(diverging, workdir, force_resume=True)
  ckpt = checkpoints.Checkpointer(workdir)
  assert ckpt.all_steps() == [10, 15]  # keep_checkpoints=2; nothing saved after the divergence
  exp, _ = build_experiment(config)
  for step in ckpt.all_steps():
    state = ckpt.restore(exp.abstract_state(), step)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))
  ckpt.close()
  state, _ = train.train_and_evaluate(config, workdir, force_resume=True)
  assert int(state.step) == 60
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))

  config.nonfinite = 'skip'
  config.optimizer.update(learning_rate=1e12, warmup_steps=0)
  state, results = train.train_and_evaluate(config, str(tmp_path / 'skip'))
  assert int(state.step) == 60
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))
  skipped = [r['skipped_updates'] for r in metric_writers.read_jsonl(str(tmp_path / 'skip')) if r['split'] == 'train']
  assert max(skipped) > 0


@pytest.mark.slow
def test_one_live_run_per_workdir_and_a_killed_holder_is_taken_over(tmp_path):
  """A second run on a held workdir stops at once naming the holder; after kill -9 of the holder, the next run
  finds its lock stale (its process is gone), takes the workdir over, resumes, and releases it at the end."""
  workdir = str(tmp_path / 'run')
  command = [sys.executable, '-m', 'pgf_sparsity.main', '--config=configs/digits.py:steps=100000',
             f'--workdir={workdir}']
  holder = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  lock = os.path.join(workdir, 'run.lock')
  try:
    deadline = time.time() + 120
    while not os.path.exists(os.path.join(workdir, 'checkpoints')) and time.time() < deadline:
      time.sleep(0.2)
    with open(lock) as f:
      assert json.load(f)['pid'] == holder.pid
    second = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    errors = [l for l in second.stderr.splitlines() if l.startswith('error: ')]
    assert second.returncode == 2 and len(errors) == 1, second.stderr[-2000:]
    assert 'held by a live run' in errors[0] and f'process {holder.pid}' in errors[0]
  finally:
    holder.kill()  # SIGKILL: the lock stays behind, naming a process that is gone
    holder.wait()
  assert os.path.exists(lock)
  third = subprocess.run(command + ['--max_steps_this_run=1'], cwd=ROOT, env=ENV, capture_output=True, text=True,
                         timeout=300)
  assert third.returncode == 0, third.stderr[-2000:]
  assert not os.path.exists(lock)


def test_a_lock_from_another_host_is_stale_only_when_its_heartbeat_stopped(tmp_path):
  from etils import epath  # pylint: disable=g-import-not-at-top
  from pgf_sparsity.training import workdir_lock  # pylint: disable=g-import-not-at-top
  lock = tmp_path / 'run.lock'
  other = {'host': 'another-host', 'pid': 1, 'started': time.time() - 3600}
  lock.write_text(json.dumps(dict(other, heartbeat=time.time() - 60)))
  with pytest.raises(workdir_lock.WorkdirHeldError, match='host another-host, process 1'):
    workdir_lock.WorkdirLock(epath.Path(tmp_path)).acquire()
  lock.write_text(json.dumps(dict(other, heartbeat=time.time() - workdir_lock.STALE_AFTER_S - 1)))
  with workdir_lock.WorkdirLock(epath.Path(tmp_path)):
    assert json.loads(lock.read_text())['pid'] == os.getpid()
  assert not lock.exists()


@pytest.mark.usefixtures('shared_compiled_steps')
def test_incompatible_resume_is_refused_unless_forced(tmp_path):
  """A run stopped at step 5 of 20: another pattern is refused (nothing written); another logging interval
  is not (it runs to step 10); --force_resume continues from step 10 with the new pattern, keeping the
  records before it."""
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(digits_config('steps=20'), workdir, max_steps_this_run=5)
  before = sorted(os.listdir(workdir))
  with pytest.raises(ValueError, match=r"another config \(differs in \['sparsity'\]\)"):
    train.train_and_evaluate(digits_config('steps=20,ff=1:8'), workdir)
  assert sorted(os.listdir(workdir)) == before
  train.train_and_evaluate(digits_config('steps=20', log_every=10), workdir, max_steps_this_run=5)  # allowed
  state, _ = train.train_and_evaluate(digits_config('steps=20,ff=1:8'), workdir, force_resume=True)
  assert int(state.step) == 20
  rows = {r['step']: r for r in metric_writers.read_jsonl(workdir) if r['split'] == 'train'}
  assert sorted(rows) == [5, 10, 15, 20]
  assert [rows[s]['pattern_m/ff'] for s in sorted(rows)] == [4.0, 4.0, 8.0, 8.0]  # the new config from step 10
  assert json.loads(open(os.path.join(workdir, 'config.json')).read())['sparsity']['targets']['ff']['m'] == 8


def digits_config(arg: str, log_every: int = 5):
  """The digits config with train rows logged every `log_every` steps."""
  digits = load_config('digits', arg)
  digits.log_every_steps = log_every
  return digits


# ---- the bad-input catalogue ----

@pytest.fixture(scope='module')
def finished_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('finished')
  train.train_and_evaluate(load_config('digits', 'steps=20'), str(workdir))
  return str(workdir)


def snapshot(path):
  return sorted((os.path.relpath(os.path.join(d, f), path), os.path.getsize(os.path.join(d, f)),
                 os.path.getmtime(os.path.join(d, f))) for d, _, fs in os.walk(path) for f in fs)


def catalogue(w, tmp):
  digits = 'configs/digits.py'
  a_file = os.path.join(tmp, 'a_file')
  truncated = os.path.join(tmp, 'truncated.npz')
  main = lambda *args, workdir=w: ['pgf_sparsity.main', *args] + ([f'--workdir={workdir}'] if workdir is not None else [])
  cfg = lambda arg='': f'--config={digits}' + (f':{arg}' if arg else '')
  return [
      (main(workdir=None), 'must have a value other than None'),
      (['pgf_sparsity.main', cfg()], 'workdir'),
      (main('--config=configs/nonexistent.py'), "config file 'configs/nonexistent.py' does not exist"),
      (main('--config=configs/nonexistent.py:runlocal'), "config file 'configs/nonexistent.py' does not exist"),
      (main(cfg(), workdir='/proc/pgf_sparsity_run'), "workdir '/proc/pgf_sparsity_run' cannot be created"),
      (main(cfg('foo=1')), "Unknown config argument 'foo'"),
      (main(cfg('ff=1-8')), 'N:M pattern looks like'),
      (main(cfg('ff=0:4')), 'need 0 < N <= M'),
      (main(cfg('ff=5:4')), 'need 0 < N <= M'),
      (main(cfg('ff=1:5')), 'does not divide'),
      (main(cfg('qkv=1:64')), 'does not divide'),
      (main(cfg('recipe=magnitude')), 'sparsity.recipe'),
      (main(cfg('flow=half')), 'sparsity.flow'),
      (main(cfg('recipe=srste')), 'straight-through'),
      (main(cfg('recipe=mdgf_linear,alpha=-1')), 'alpha'),
      (main(cfg('dense=0.7,finetune=0.5')), 'exceed'),
      (main(cfg('dense=1.5')), 'fraction must lie'),
      (main(cfg('recipe=sdgf_stepwise,ff=3:4')), 'powers of two'),
      (main(cfg('steps=abc')), 'Config argument steps needs an integer'),
      (main(cfg('alpha=inf')), 'Config argument alpha needs a finite number'),
      (main(cfg(), workdir=''), '--workdir is empty'),
      (main(cfg(), '--config.model.dtype=float8'), 'model.dtype'),
      (main(cfg(), '--config.optimizer.learning_rate=-1.0'), 'optimizer.learning_rate'),
      (main(cfg(), '--config.optimizer.learning_rate=nan'), 'finite number'),
      (main(cfg(), '--config.optimizer.b2=1.0'), 'optimizer.b2'),
      (main(cfg(), '--config.sparsity.alpha=-0.5'), 'alpha'),
      (main(cfg(), '--config.batch_size=0'), 'batch_size'),
      (main(cfg(), '--config.batch_size=abc'), 'invalid literal'),
      (main(cfg(), '--config.nope=1'), 'unknown config key'),
      (main(cfg(), '--config.optimizer.momentum=0.9'), 'unknown config key'),
      (main(cfg(), '--config.model.widht=64'),
       'unknown config key in an override: \'widht\'. Did you mean "width" instead of "widht"?'),
      (main(cfg(), '--config.model.name=resnet'), 'model.name'),
      (main(cfg(), '--config.model.width=30'), 'does not divide'),
      (main(cfg(), '--config.model.patch_size=3'), 'not divisible by patch size'),
      (main(cfg(), '--config.loss=hinge'), 'config.loss'),
      (main(cfg(), '--config.dataset.name=cifar10'), 'Unknown dataset.name'),
      (main(cfg(), '--config.label_smoothing=1.5'), 'label_smoothing'),
      (main(cfg(), '--config.mixup_alpha=-1.0'), 'mixup_alpha'),
      (main(cfg(), '--config.sparsity.mask_update_every=0'), 'mask_update_every'),
      (main(cfg(), '--config.nonfinite=maybe'), 'nonfinite'),
      (main(cfg(), '--config.sparsity.targets.ff.regex=.*/nothing/kernel'), 'matches no parameter'),
      (main(cfg(), '--config.sparsity.group_axis=diag'), 'group_axis'),
      (main('--config=configs/vit_i1k.py', f'--config.dataset.tfds_data_dir={tmp}'), 'not prepared'),
      (main(cfg(), workdir=os.path.join(a_file, 'sub')), 'cannot be created or written'),
      (main(cfg('ff=1:8')), 'another config'),
      (main(cfg(), '--max_steps_this_run=abc'), 'invalid literal'),
      (main(cfg(), '--max_steps_this_run=0'), 'max_steps_this_run must be a positive number'),
      (main(cfg(), '--max_steps_this_run=-1'), 'max_steps_this_run must be a positive number'),
      (main('--config=configs/t5_glue.py:task=foo'), 'task must be one of cola, sst2'),
      (main('--config=configs/vit_i1k.py:runlocal'), 'not prepared'),
      (['pgf_sparsity.export', f'--workdir={os.path.join(tmp, "nothing")}', '--output=x.npz'], 'holds no training run'),
      (['pgf_sparsity.export', f'--verify={truncated}'], 'not a readable'),
      (['pgf_sparsity.export', f'--verify={a_file}'], 'not a readable'),
      (['pgf_sparsity.export', f'--workdir={w}', '--output=/nonexistent_dir/x.npz'], 'not a writable directory'),
      (['pgf_sparsity.export'], 'give --workdir'),
      (['pgf_sparsity.export', f'--workdir={w}', f'--output={os.path.join(tmp, "good.npz")}'], '--overwrite'),
      (['pgf_sparsity.export', f'--workdir={w}', f'--output={os.path.join(tmp, "x.npz")}', '--dtype=int4'],
       '--dtype must be one of'),
      (['pgf_sparsity.export', f'--workdir={w}', f'--output={os.path.join(tmp, "model.txt")}'], 'names no format'),
  ]


@pytest.mark.slow
def test_bad_input_catalogue(finished_run, tmp_path):
  tmp = str(tmp_path)
  with open(os.path.join(tmp, 'a_file'), 'w') as f:
    f.write('not a directory, not an npz\n')
  exporting.export(finished_run, os.path.join(tmp, 'good.npz'))
  with open(os.path.join(tmp, 'good.npz'), 'rb') as f:
    data = f.read()
  with open(os.path.join(tmp, 'truncated.npz'), 'wb') as f:
    f.write(data[:len(data) // 2])
  before = snapshot(finished_run)
  cases = catalogue(finished_run, tmp)
  assert len(cases) >= 30

  # Each case is a process of its own, forked from one that has imported the package once (start-up is not
  # what this test is about, and it would be most of its time).
  with open(os.path.join(tmp, 'cases.json'), 'w') as f:
    json.dump([args for args, _ in cases], f)
  server = subprocess.run([sys.executable, os.path.join(ROOT, 'tests', 'cli_forkserver.py'),
                           os.path.join(tmp, 'cases.json'), os.path.join(tmp, 'results.json')],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
  assert server.returncode == 0, server.stderr[-3000:]
  with open(os.path.join(tmp, 'results.json')) as f:
    results = [(args, expected, result) for (args, expected), result in zip(cases, json.load(f))]
  failures = []
  for args, expected, result in results:
    errors = [l for l in result['stderr'].splitlines() if l.startswith('error: ')]
    if result['returncode'] == 0 or len(errors) != 1 or expected not in errors[0] or result['seconds'] > 60:
      failures.append((args, expected, result['returncode'], round(result['seconds'], 1),
                       errors or result['stderr'][-800:]))
  assert not failures, failures
  assert snapshot(finished_run) == before


# A run on a small disk of its own (a tmpfs in a private mount namespace: `unshare -rm` needs no root): two
# checkpoints fit, then a file fills the disk to 60 kB of the end, the resumed run fails at its next save,
# the file is deleted and the third run resumes. WRITER picks the path that fails: the check before orbax
# starts ('checked'), or orbax's own writer threads ('inside orbax', the check switched off).
FULL_DISK_SCRIPT = r'''
set -u
mount -t tmpfs -o size=6m tmpfs "$DISK" || exit 97
cd "$ROOT"
run() {
  "$PY" -c "$WRITER" --config=configs/digits.py:steps=40 --workdir="$DISK/w" --config.checkpoint_every_steps=10 \
    --config.log_every_steps=10 --config.eval_every_steps=20 "$@"
}
run --max_steps_this_run=20 > "$OUT/1.out" 2> "$OUT/1.err"; echo $? > "$OUT/1.rc"
"$PY" -c "import shutil; open('$DISK/filler', 'wb').write(bytes(max(shutil.disk_usage('$DISK').free - 60000, 0)))"
run > "$OUT/2.out" 2> "$OUT/2.err"; echo $? > "$OUT/2.rc"
ls -A "$DISK/w/checkpoints" > "$OUT/2.ls"
cp "$DISK/w/metrics.jsonl" "$OUT/2.metrics.jsonl"
rm "$DISK/filler"
run > "$OUT/3.out" 2> "$OUT/3.err"; echo $? > "$OUT/3.rc"
cp -r "$DISK/w" "$OUT/w"
'''
WRITERS = {
    'checked': 'import sys; from absl import app; from pgf_sparsity import main; sys.argv[0] = "main"; '
               'app.run(main.main, flags_parser=main.parse_flags)',
    'inside orbax': 'import sys; from absl import app; from pgf_sparsity import main; sys.argv[0] = "main"; '
                    'from pgf_sparsity.training import checkpoints; '
                    'checkpoints.Checkpointer._check_room = lambda *args: None; '
                    'app.run(main.main, flags_parser=main.parse_flags)',
}


@pytest.mark.slow
@pytest.mark.parametrize('writer', sorted(WRITERS))
def test_a_full_disk_stops_with_one_line_keeps_the_good_checkpoints_and_resumes(writer, tmp_path):
  out, disk = tmp_path / 'out', tmp_path / 'disk'
  out.mkdir(), disk.mkdir()
  env = dict(ENV, DISK=str(disk), OUT=str(out), ROOT=ROOT, PY=sys.executable, WRITER=WRITERS[writer])
  done = subprocess.run(['unshare', '-rm', 'bash', '-c', FULL_DISK_SCRIPT], env=env, capture_output=True,
                        text=True, timeout=600)
  assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
  read = lambda name: (out / name).read_text()
  assert read('1.rc').strip() == '0', read('1.err')[-2000:]
  assert read('2.rc').strip() == '1'
  output = read('2.out') + read('2.err')
  assert 'Traceback' not in output and 'Event loop is closed' not in output, output[-3000:]
  lines = [line for line in read('2.err').splitlines() if line.strip()]
  assert len(lines) == 1, lines
  error = lines[0]
  assert error.startswith('error: could not write the checkpoint of step 30 '), error
  assert 'the newest good checkpoint is step 20' in error and 'rerun to resume' in error, error
  assert read('2.ls').split() == ['10', '20']  # nothing written in part is left for a resume to take
  # whole rows only; those past step 20 (to step 40 where the failure surfaced at the next save) go on resume
  assert [r['step'] for r in map(json.loads, read('2.metrics.jsonl').splitlines())][:4] == [10, 20, 20, 30]
  assert read('3.rc').strip() == '0', read('3.err')[-2000:]
  assert 'Resumed from the checkpoint at step 20.' in read('3.out')
  records = metric_writers.read_jsonl(out / 'w')
  assert [(r['step'], r['split']) for r in records] == [
      (10, 'train'), (20, 'train'), (20, 'eval'), (30, 'train'), (40, 'train'), (40, 'eval')]
  assert json.loads((out / 'w' / 'results.json').read_text())['step'] == 40


class FullDisk:
  """A file on a full disk: a write keeps its first `taken` characters, then it and any flush fail."""

  def __init__(self, file, taken: int):
    self.file, self.taken = file, taken

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.file.close()

  def write(self, data):
    self.file.write(data[:self.taken])
    self.file.flush()
    self.flush()

  def flush(self):
    raise OSError(errno.ENOSPC, 'No space left on device')


def test_a_refused_metrics_row_names_its_file_and_step_and_leaves_whole_lines(tmp_path, monkeypatch):
  logger = metric_writers.MetricsLogger(str(tmp_path))
  logger.write(1, 'train', {'loss': 1.0})
  path_cls, real_open = type(logger.path), type(logger.path).open
  monkeypatch.setattr(path_cls, 'open', lambda path, mode='r', **kw: (
      FullDisk(real_open(path, mode, **kw), taken=12) if mode == 'a' else real_open(path, mode, **kw)))
  with pytest.raises(checkpoints.WriteFailedError,
                     match=r'could not append the eval metrics of step 2 to \S*metrics.jsonl \(No space left'):
    logger.write(2, 'eval', {'loss': 0.5})
  monkeypatch.undo()
  assert [(r['step'], r['split']) for r in metric_writers.read_jsonl(str(tmp_path))] == [(1, 'train')]
  logger.tensorboard._file = FullDisk(None, taken=0)  # pylint: disable=protected-access  (the event's flush fails)
  with pytest.raises(checkpoints.WriteFailedError, match=r'step 3 to \S*events.out.tfevents\S* \(No space left'):
    logger.write(3, 'train', {'loss': 0.25})
  assert [r['step'] for r in metric_writers.read_jsonl(str(tmp_path))] == [1]


@pytest.mark.slow
def test_kill_9_at_random_points_of_checkpoint_saves_always_leaves_a_complete_checkpoint(tmp_path):
  """12 kill -9s, each at a seeded random time into a process that saves back to back: most land inside a
  save (between its 'begin' and 'end'); after every one, the newest checkpoint that restores is intact (its
  checksum verified), equal bit for bit to the state saved at its step, and no older than the last save that
  finished (a save reported written is never lost)."""
  from checkpoint_saver import state_at, jax_shapes  # pylint: disable=g-import-not-at-top
  kills, rng, workdir = 12, random.Random(1), str(tmp_path / 'saves')
  inside_a_save, restored_steps, written = 0, [], 0
  for _ in range(kills):
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, 'tests', 'checkpoint_saver.py'), workdir, '100000'],
                            cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines = [proc.stdout.readline()]  # the first save has begun: start-up and the restore are behind it
    time.sleep(rng.uniform(0.0, 1.0))  # not reading meanwhile: a read would time the kill to a printed line
    proc.kill()
    lines += proc.stdout.read().splitlines()  # what it printed before it died
    proc.wait()
    inside_a_save += lines[-1].startswith('begin')
    ckpt = checkpoints.Checkpointer(workdir, max_to_keep=2)
    state, step = ckpt.restore_latest_good(jax_shapes(state_at(0)))
    ckpt.close()
    written = max([written] + [int(line.split()[1]) for line in lines if line.startswith('end')])
    if step is None:  # killed before its first save was written: nothing to restore yet
      assert written == 0
      continue
    assert step >= written, (step, written)
    for got, want in zip(jax.tree.leaves(state), jax.tree.leaves(state_at(step))):
      np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    restored_steps.append(step)
  assert inside_a_save >= kills // 2, inside_a_save
  assert restored_steps == sorted(restored_steps) and len(restored_steps) >= kills - 2, restored_steps
