"""The training loop's periodic work, expressed once: log train metrics, evaluate, checkpoint, and run the
gradient-noise diagnostic, each every `*_every_steps` and at the end of the run (or of this segment of it).
"""
import json
import time
from typing import Any, Dict

import jax
from etils import epath

from pgf_sparsity.analysis import diagnostics
from pgf_sparsity.analysis import flops as flops_lib
from pgf_sparsity.formats import file_paths
from pgf_sparsity.sparsity import schedules
from pgf_sparsity.training import console
from pgf_sparsity.training import metric_writers as metrics_lib

PHASE_CODES = {schedules.DENSE: 0.0, schedules.SPARSE: 1.0, schedules.FINETUNE: 2.0}


class NonFiniteError(RuntimeError):
  pass


def due(step: int, every: int, *also: int) -> bool:
  """Whether periodic work with interval `every` (0: never) runs after `step` steps."""
  return (every > 0 and step % every == 0) or step in also


class PeriodicWork:
  """Holds what the periodic work carries between steps: pending metrics, timers, the previous log's masks."""

  def __init__(self, exp, compiled, data, workdir: epath.Path, checkpointer, start: int, stop: int):
    self.exp, self.compiled, self.data, self.workdir, self.checkpointer = exp, compiled, data, workdir, checkpointer
    self.stop = stop
    self.logger = metrics_lib.MetricsLogger(workdir)
    self.noise = diagnostics.GradientNoise()
    self.flops = flops_lib.TrainingFlops(exp.model, exp.dummy_inputs, exp.recipe, exp.config.batch_size)
    self.pending, self.last_train, self.last_eval = [], {}, {}
    self.previous_masks = None
    self.last_log = (time.time(), start)

  def before_step(self, step: int, plan, state, batch) -> None:
    """The gradient-noise diagnostic, on the state and batch the step is about to use."""
    if due(step, self.exp.config.diagnostics_every_steps):
      grads, masks, raw_grads = jax.device_get(self.compiled.gradient_noise(plan)(state, batch))
      self.logger.write(step, 'diag', self.noise.update(grads, masks, raw_grads))

  def after_step(self, done: int, plan, state, step_metrics, preempted: bool) -> None:
    config, total = self.exp.config, self.exp.total_steps
    self.pending.append(step_metrics)
    if due(done, config.log_every_steps, total):
      self._log(done, plan, state)
    if due(done, config.eval_every_steps, total):
      self._evaluate(done, state)
    if due(done, config.checkpoint_every_steps, self.stop) or preempted:
      self.check_finite(state)
      self.checkpointer.save(done, state)

  def _log(self, done: int, plan, state) -> None:
    self.check_finite(state)
    scalars = metrics_lib.mean_of(self.pending)
    now, (then, then_step) = time.time(), self.last_log
    scalars['steps_per_second'] = (done - then_step) / max(now - then, 1e-9)
    self.last_log = (now, done)
    scalars['phase'] = PHASE_CODES[plan.phase]
    scalars['train_flops'] = self.flops.cumulative(done)
    if plan.sparse and self.exp.recipe.kernels:
      summary, self.previous_masks = diagnostics.nm_summary(self.exp.recipe, state.params, state.masks, plan,
                                                            self.previous_masks)
      scalars.update(summary)
    self.logger.write(done, 'train', scalars)
    console.train_line(done, self.exp.total_steps, scalars, plan)
    self.last_train, self.pending = scalars, []

  def _evaluate(self, done: int, state) -> None:
    self.last_eval = self.compiled.evaluate(state.params, self.data)
    self.logger.write(done, 'eval', self.last_eval)
    console.eval_line(done, self.last_eval)

  def check_finite(self, state) -> None:
    """With nonfinite='stop', a non-finite step stops the run before anything non-finite is saved."""
    bad = int(state.nonfinite_step)
    if self.exp.config.nonfinite == 'stop' and bad >= 0:
      self.checkpointer.close()
      raise NonFiniteError(f'Non-finite loss or gradients at step {bad}; stopped without saving. The last good '
                           f'checkpoint is step {self.checkpointer.latest_step()}. Lower the learning rate, or '
                           'set config.nonfinite="skip" to skip such updates.')

  def finish(self, state, preempted: bool) -> Dict[str, Any]:
    """Closes the run's outputs; a finished run gets DIR/results.json (sweeps skip such runs)."""
    self.check_finite(state)
    if not self.last_eval:  # resumed a finished run, or stopped between evaluations
      self.checkpointer.wait()  # input pipelines and a background save should not overlap at the end
      self.last_eval = self.compiled.evaluate(state.params, self.data)
    self.logger.close()
    self.checkpointer.close()
    done = int(state.step)
    if done == self.exp.total_steps and jax.process_index() == 0:
      file_paths.write_atomically(self.workdir / 'results.json', json.dumps(
          {'step': done, 'eval': self.last_eval, 'train_flops': self.flops.cumulative(done),
           'dense_train_flops': self.flops.dense_cumulative(done)}))
    return {'train': self.last_train, 'eval': self.last_eval, 'preempted': preempted}
