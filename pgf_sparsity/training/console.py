"""What a person watching a run sees: a short header, one line per log step, the evaluation results.

Lines go to the Python logger 'pgf_sparsity.training.console', which `main.py` sends to stdout; library use
(tests, notebooks) sees nothing unless it attaches a handler. Library INFO chatter (absl, orbax) is separate and off
by default in `main.py`.
"""
import logging
import sys
from typing import Mapping

import jax

LOGGER = logging.getLogger('pgf_sparsity.training.console')


def to_stdout() -> None:
  """Prints the console lines on stdout (once per process; only process 0 reports)."""
  if not LOGGER.handlers:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter('%(message)s'))
    LOGGER.addHandler(handler)
  LOGGER.setLevel(logging.INFO if jax.process_index() == 0 else logging.WARNING)
  LOGGER.propagate = False


def _duration(seconds: float) -> str:
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  return f'{hours}h{rest // 60:02d}m' if hours else f'{rest // 60}m{rest % 60:02d}s'


def header(workdir: str, exp, start_step: int) -> None:
  recipe = exp.recipe
  devices = jax.devices()
  LOGGER.info('pgf_sparsity: %s, %d steps, workdir %s%s', exp.config.model.name, exp.total_steps, workdir,
              f' (resuming at step {start_step})' if start_step else '')
  LOGGER.info('devices: %d x %s, %d process(es)', len(devices), devices[0].device_kind, jax.process_count())
  patterns = ', '.join(f'{t.name} {t.n}:{t.m}' for t in recipe.recipe.targets)
  LOGGER.info('recipe: %s, flow %s%s; %d sparse kernels', recipe.recipe.name, recipe.recipe.flow,
              f', {patterns}' if patterns and recipe.kernels else '', len(recipe.kernels))


def plan_change(step: int, plan) -> None:
  LOGGER.info('step %d: %s phase, %s', step, plan.phase, _patterns(plan))


def _patterns(plan) -> str:
  return ' '.join(f'{name} {n}:{m}' for name, n, m in plan.patterns) or 'dense'


def train_line(step: int, total: int, scalars: Mapping[str, float], plan) -> None:
  rate = scalars['steps_per_second']
  eta = _duration((total - step) / rate) if rate > 0 else '?'
  LOGGER.info('step %*d/%d  loss %.4f  acc %.4f  beta %.3f  %s  %.1f steps/s  ETA %s', len(str(total)), step,
              total, scalars['loss'], scalars.get('accuracy', float('nan')), scalars['beta'], _patterns(plan),
              rate, eta)


def eval_line(step: int, results: Mapping[str, float]) -> None:
  LOGGER.info('eval at step %d: %s', step, '  '.join(f'{k} {v:.4f}' for k, v in sorted(results.items())))


def note(message: str, *args) -> None:
  LOGGER.info(message, *args)
