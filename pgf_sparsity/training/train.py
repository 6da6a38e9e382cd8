"""The one training loop: config -> validation -> data -> experiment -> jitted steps -> periodic work.

Everything the config says is checked before any data is loaded; the recipe is bound to the model's
abstract parameters before anything is compiled; then one jitted train step per plan (phase / SDGF
frame) runs step by step on batches prepared ahead (prefetch.py), with logging, evaluation of the exact
N:M model and checkpoints at their intervals (periodic.py).
"""
import contextlib
import errno
from typing import Any, Dict, Optional, Tuple

import jax
import ml_collections
from absl import logging
from clu import parameter_overview
from etils import epath

from pgf_sparsity import config_lib
from pgf_sparsity import data as data_lib
from pgf_sparsity.formats import file_paths
from pgf_sparsity.training import checkpoints
from pgf_sparsity.training import console
from pgf_sparsity.training import experiment
from pgf_sparsity.training import initialise
from pgf_sparsity.training import metric_writers
from pgf_sparsity.training import periodic
from pgf_sparsity.training import prefetch
from pgf_sparsity.training import steps
from pgf_sparsity.training import validation
from pgf_sparsity.training import workdir_lock

NonFiniteError = periodic.NonFiniteError


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       max_steps_this_run: Optional[int] = None,
                       force_resume: bool = False) -> Tuple[experiment.TrainState, Dict[str, Any]]:
  """Trains (resuming from the workdir's newest good checkpoint), evaluates, checkpoints.

  `max_steps_this_run` stops after that many steps (checkpointed), for job chaining on time-limited slots;
  SIGTERM does the same at the next step. The next call resumes. A workdir holding a run of another config
  is refused unless `force_resume`. Returns the final state and {'train': last logged train metrics,
  'eval': the last evaluation, 'preempted': whether SIGTERM stopped the run}.
  """
  if max_steps_this_run is not None and max_steps_this_run < 1:
    raise ValueError(f'--max_steps_this_run must be a positive number of steps, got {max_steps_this_run}.')
  config = config_lib.complete(config)  # every key the config leaves out, at its default
  recipe = validation.check_config(config)
  workdir = validation.check_workdir(workdir)  # an absolute epath.Path: every file of the run goes through it
  data = data_lib.build(config)
  exp = experiment.build(config, data.spec, recipe)  # patterns checked against the model's kernels
  validation.check_resumable(config, workdir, force_resume)  # after the config's own errors, before writing
  with _held(workdir):  # one live run per workdir: a second one stops here, naming this one
    return _run(exp, data, workdir, max_steps_this_run)


def _held(workdir: epath.Path):
  """The workdir's lock, held by process 0 for the whole run."""
  return workdir_lock.WorkdirLock(workdir) if jax.process_index() == 0 else contextlib.nullcontext()


def _run(exp: experiment.Experiment, data, workdir: epath.Path, max_steps_this_run: Optional[int]):
  """Restore or initialise, then the loop; a write the disk refuses ends the run naming what is kept."""
  compiled = steps.CompiledSteps(exp)
  checkpointer = checkpoints.Checkpointer(workdir, exp.config.keep_checkpoints)
  try:
    state = _restore_or_initialise(exp, checkpointer, workdir)
    _save_run_description(exp.config, data.spec, workdir)
    return _loop(exp, compiled, data, workdir, checkpointer, state, max_steps_this_run)
  except (checkpoints.WriteFailedError, OSError) as e:
    if isinstance(e, OSError) and e.errno not in _DISK_REFUSED:
      raise
    checkpointer.abandon()
    newest = checkpointer.latest_step()
    kept = f'the newest good checkpoint is step {newest}' if newest is not None else 'no checkpoint was kept'
    raise checkpoints.WriteFailedError(f'{e if isinstance(e, checkpoints.WriteFailedError) else _what(e)}; '
                                       f'{kept}. Free space (or restore the path) and rerun to resume.') from e


_DISK_REFUSED = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EIO)


def _what(error: OSError) -> str:
  return f'could not write {error.filename or "a file of the run"} ({checkpoints.reason(error)})'


def _loop(exp, compiled, data, workdir, checkpointer, state, max_steps_this_run):
  """Steps from the state's step to the end (or this run's stop, or a preemption), with periodic work."""
  start = int(state.step)
  stop = exp.total_steps if max_steps_this_run is None else min(exp.total_steps, start + max_steps_this_run)
  work = periodic.PeriodicWork(exp, compiled, data, workdir, checkpointer, start, stop)
  console.header(workdir, exp, start)
  plan = None
  with checkpoints.Preemption() as preemption, \
       prefetch.Prefetcher(lambda s: exp.shard(data.train_batch(s)), start, stop) as batches:
    for step in range(start, stop):
      previous, plan = plan, exp.recipe.plan(step)
      if plan != previous:
        console.plan_change(step, plan)
      batch = batches.get(step)  # prepared in the background while the previous step ran
      work.before_step(step, plan, state, batch)
      state, step_metrics = compiled.train_step(plan)(state, batch)
      preempted = preemption.reached(step + 1)
      work.after_step(step + 1, plan, state, step_metrics, preempted)
      if preempted:
        logging.warning('SIGTERM: saved a checkpoint at step %d and stopped; rerun to resume.', step + 1)
        break
  return state, work.finish(state, preemption.requested)


def _restore_or_initialise(exp: experiment.Experiment, checkpointer, workdir: epath.Path) -> experiment.TrainState:
  state, restored_step = checkpointer.restore_latest_good(exp.abstract_state())
  if state is not None:
    console.note('Resumed from the checkpoint at step %d.', restored_step)
    metric_writers.truncate(workdir, restored_step)
    return state
  state = exp.initial_state()
  init = exp.config.init
  if init.path:
    state = initialise.initialised_state(init, exp, state)
    console.note('Initialised the parameters from %s (%s).', init.path, init.format)
  parameter_overview.log_parameter_overview(state.params, include_stats=False)  # stats would gather shards
  return state


def _save_run_description(config, spec: data_lib.DataSpec, workdir: epath.Path) -> None:
  """DIR/config.json (what resumption compares) and DIR/run_info.json (the data spec, for export)."""
  if jax.process_index() == 0:
    file_paths.write_atomically(workdir / 'config.json', config.to_json_best_effort(indent=2))
    file_paths.write_atomically(workdir / 'run_info.json', spec.to_json())
