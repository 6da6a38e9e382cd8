"""The one training loop: config -> data + model + optimizer -> jitted step over a device mesh -> metrics,
evaluation of the exact N:M model, checkpoints.

One `jax.jit` train step per plan (phase / SDGF frame; see sparsity.StepPlan), data-parallel over a 1-D
`Mesh` of all devices with `NamedSharding`: parameters replicated, batches split along 'data'.
"""
import dataclasses
import functools
import json
import os
import signal
import threading
import time
from typing import Any, Dict, Optional, Tuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from clu import parameter_overview
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from pgf_sparsity import checkpoints
from pgf_sparsity import diagnostics as diagnostics_lib
from pgf_sparsity import flops as flops_lib
from pgf_sparsity import metrics as metrics_lib
from pgf_sparsity import models
from pgf_sparsity import sparsity as sparsity_lib
from pgf_sparsity import tasks
from pgf_sparsity import tree_paths
from pgf_sparsity.data import images as images_lib

TOP_LEVEL_KEYS = {'seed', 'dataset', 'model', 'sparsity', 'batch_size', 'eval_batch_size', 'total_steps',
                  'num_epochs', 'optimizer', 'loss', 'label_smoothing', 'mixup_alpha', 'log_every_steps',
                  'eval_every_steps', 'checkpoint_every_steps', 'keep_checkpoints', 'nonfinite',
                  'diagnostics_every_steps'}
# Keys that may change between a run and its resumption: they do not change what is trained.
RESUMABLE_CHANGES = {'log_every_steps', 'eval_every_steps', 'checkpoint_every_steps', 'keep_checkpoints',
                     'eval_batch_size', 'diagnostics_every_steps'}
NONFINITE_POLICIES = ('stop', 'skip')
OPTIMIZER_KEYS = {'learning_rate', 'init_learning_rate', 'min_learning_rate', 'warmup_steps',
                  'warmup_epochs', 'cooldown_epochs', 'weight_decay', 'b1', 'b2', 'eps', 'grad_clip_norm'}


@dataclasses.dataclass(frozen=True)
class RunInfo:
  """What a run's shapes depend on besides the config; saved as DIR/run_info.json. It stands in for the
  data where nothing is trained or evaluated (export)."""
  task: str
  input_shapes: Dict[str, Tuple[int, ...]]
  output_size: int  # classes, or the vocabulary size
  steps_per_epoch: int

  @property
  def num_classes(self) -> int:
    return self.output_size

  @property
  def vocab_size(self) -> int:
    return self.output_size

  @classmethod
  def of(cls, data) -> 'RunInfo':
    task = getattr(data, 'task', 'image_classification')
    size = data.vocab_size if task == 'seq2seq' else data.num_classes
    return cls(task, {k: tuple(int(d) for d in v) for k, v in data.input_shapes.items()}, int(size),
               int(data.steps_per_epoch))

  @classmethod
  def load(cls, workdir: str) -> 'RunInfo':
    with open(os.path.join(workdir, 'run_info.json')) as f:
      info = json.load(f)
    return cls(info['task'], {k: tuple(v) for k, v in info['input_shapes'].items()}, int(info['output_size']),
               int(info['steps_per_epoch']))

  def save(self, workdir: str) -> None:
    with open(os.path.join(workdir, 'run_info.json'), 'w') as f:
      json.dump(dataclasses.asdict(self), f)


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any
  masks: Dict[str, jax.Array]  # the masks of the last sparse step (all True before the sparse phase)
  rng: jax.Array
  nonfinite_step: jax.Array  # first step with a non-finite loss or gradient, -1 if none


class NonFiniteError(RuntimeError):
  pass


def validate_config(config) -> None:
  """Unknown or malformed keys fail here, before data loading or compilation."""
  unknown = set(config.keys()) - TOP_LEVEL_KEYS
  if unknown:
    raise ValueError(f'Unknown config keys {sorted(unknown)}; known: {sorted(TOP_LEVEL_KEYS)}.')
  unknown = set(config.optimizer.keys()) - OPTIMIZER_KEYS
  if unknown:
    raise ValueError(f'Unknown config.optimizer keys {sorted(unknown)}; known: {sorted(OPTIMIZER_KEYS)}.')
  if config.loss not in ('softmax', 'sigmoid'):
    raise ValueError(f"config.loss must be 'softmax' or 'sigmoid', got {config.loss!r}.")
  for key in ('batch_size', 'log_every_steps', 'eval_every_steps', 'checkpoint_every_steps'):
    if not isinstance(config[key], int) or config[key] <= 0:
      raise ValueError(f'config.{key} must be a positive integer, got {config[key]!r}.')
  every = config.get('diagnostics_every_steps', 0)
  if not isinstance(every, int) or every < 0:
    raise ValueError(f'config.diagnostics_every_steps must be an integer >= 0 (0: off), got {every!r}.')
  if (config.get('total_steps') is None) == (config.get('num_epochs') is None):
    raise ValueError('Give exactly one of config.total_steps and config.num_epochs.')
  if config.batch_size % jax.device_count():
    raise ValueError(f'config.batch_size {config.batch_size} must be divisible by the {jax.device_count()} '
                     'devices.')
  if not 0.0 <= config.label_smoothing < 1.0:
    raise ValueError(f'config.label_smoothing must lie in [0, 1), got {config.label_smoothing}.')
  if config.mixup_alpha < 0:
    raise ValueError(f'config.mixup_alpha must be >= 0, got {config.mixup_alpha}.')
  if config.get('nonfinite', 'stop') not in NONFINITE_POLICIES:
    raise ValueError(f'config.nonfinite must be one of {NONFINITE_POLICIES}, got {config.nonfinite!r}.')


def build_data(config):
  name = config.dataset.get('name')
  eval_batch = config.get('eval_batch_size') or config.batch_size
  if name == 'tfds':
    from pgf_sparsity.data import tfds_images  # pylint: disable=g-import-not-at-top
    return tfds_images.TfdsImages(config.dataset, config.batch_size, eval_batch, config.seed)
  if name == 'synthetic':
    return images_lib.SyntheticImages(config.dataset, config.batch_size, eval_batch, config.seed)
  if name in ('shakespeare', 'tfds_text'):
    from pgf_sparsity.data import text  # pylint: disable=g-import-not-at-top
    return text.build(config.dataset, config.batch_size, eval_batch, config.seed)
  return images_lib.OfflineImages(config.dataset, config.batch_size, eval_batch, config.seed)


def learning_rate_schedule(config, total_steps: int, steps_per_epoch: int):
  opt = config.optimizer
  warmup = opt.get('warmup_steps')
  if opt.get('warmup_epochs') is not None:
    if warmup is not None:
      raise ValueError('Give one of optimizer.warmup_steps and optimizer.warmup_epochs.')
    warmup = int(round(opt.warmup_epochs * steps_per_epoch))
  # Cooldown: the last epochs stay at the minimum learning rate (timm's cooldown_epochs).
  cooldown = int(round((opt.get('cooldown_epochs') or 0) * steps_per_epoch))
  decay_steps = max(total_steps - cooldown, 1)
  warmup = min(int(warmup or 0), decay_steps)
  min_lr = opt.get('min_learning_rate', 0.0)
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=opt.get('init_learning_rate', 0.0), peak_value=opt.learning_rate, warmup_steps=warmup,
      decay_steps=decay_steps, end_value=min_lr)
  if not cooldown:
    return schedule
  return optax.join_schedules([schedule, optax.constant_schedule(min_lr)], [decay_steps])


def make_optimizer(config, sparsity: sparsity_lib.Sparsity, schedule):
  opt = config.optimizer
  chain = [sparsity.transform()]
  if opt.get('grad_clip_norm'):
    chain.append(optax.clip_by_global_norm(opt.grad_clip_norm))
  # Weight decay on kernels only (not biases, norms, embeddings' positions, class token).
  decay_mask = lambda params: jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], 'key', None) == 'kernel', params)
  chain.append(optax.adamw(schedule, b1=opt.get('b1', 0.9), b2=opt.get('b2', 0.999), eps=opt.get('eps', 1e-8),
                           weight_decay=opt.get('weight_decay', 0.0), mask=decay_mask))
  return optax.chain(*chain)


class Trainer:
  """Holds what the step functions close over; `train_and_evaluate` drives it."""

  def __init__(self, config, workdir: str, data: Any = None):
    """`data` defaults to the config's dataset; a RunInfo will do where nothing is trained or evaluated."""
    validate_config(config)
    self.config = config
    self.workdir = workdir
    self.data = build_data(config) if data is None else data
    steps_per_epoch = self.data.steps_per_epoch
    self.total_steps = (config.total_steps if config.get('total_steps') is not None
                        else int(round(config.num_epochs * steps_per_epoch)))
    if self.total_steps <= 0:
      raise ValueError(f'The run has {self.total_steps} training steps; raise total_steps or num_epochs.')
    self.task = tasks.build(config, self.data)
    model_config = dict(config.model)
    size_key = 'vocab_size' if self.task.name == 'seq2seq' else 'num_classes'
    if model_config.get(size_key) is None:
      model_config[size_key] = getattr(self.data, size_key)
    self.model: nn.Module = models.build(model_config)
    self.sparsity = sparsity_lib.Sparsity(config.sparsity, self.total_steps, steps_per_epoch)

    self.mesh = Mesh(np.array(jax.devices()), ('data',))
    self.replicated = NamedSharding(self.mesh, P())
    self.batch_sharding = NamedSharding(self.mesh, P('data'))

    dummy = self.task.dummy_inputs(self.data.input_shapes)
    abstract_params = jax.eval_shape(lambda: self.model.init(jax.random.PRNGKey(0), *dummy)['params'])
    self.sparsity.bind(abstract_params)
    self.sparsity.check_layers(self.model.apply, abstract_params, *dummy)
    self.schedule = learning_rate_schedule(config, self.total_steps, steps_per_epoch)
    self.tx = make_optimizer(config, self.sparsity, self.schedule)
    self._dummy = dummy
    self._train_steps = {}
    self._eval_step = None
    self._predict_step = None

  # ---- state ----
  def _init_state(self, rng) -> TrainState:
    init_rng, state_rng = jax.random.split(rng)
    params = self.model.init(init_rng, *self._dummy)['params']
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=self.tx.init(params),
                      masks=self.sparsity.all_kept_masks(params), rng=state_rng,
                      nonfinite_step=jnp.full((), -1, jnp.int32))

  def initial_state(self) -> TrainState:
    init = jax.jit(self._init_state, out_shardings=self.replicated)
    return init(jax.random.PRNGKey(self.config.seed))

  def abstract_state(self):
    shapes = jax.eval_shape(self._init_state, jax.random.PRNGKey(0))
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=self.replicated), shapes)

  # ---- steps ----
  def _sparsity_for(self, state: TrainState, plan):
    sp = self.sparsity
    if not plan.sparse:
      return None, jnp.ones((), jnp.float32), {}
    if sp.mask_update_every == 1:
      masks = sp.masks(state.params, plan)
    else:
      masks = jax.lax.cond(sp.is_refresh_step(state.step, plan), lambda: sp.masks(state.params, plan),
                           lambda: state.masks)
    beta = sp.beta(state.step, plan)
    return masks, beta, {'sparsity': sp.collection(masks, beta)}

  def _train_step(self, plan, diagnostics: bool, state: TrainState, batch):
    config = self.config
    masks, beta, extra = self._sparsity_for(state, plan)
    rng = jax.random.fold_in(state.rng, state.step)

    def loss_fn(params):
      apply_fn = lambda p, *args, **kwargs: self.model.apply({'params': p, **extra}, *args, **kwargs)
      return self.task.train_loss(apply_fn, params, batch, rng)

    (loss, task_metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = self.tx.update(grads, state.opt_state, state.params, nm_masks=masks, nm_beta=beta)
    params = optax.apply_updates(state.params, updates)
    step_metrics = {
        'loss': loss,
        **task_metrics,
        'grad_norm': optax.tree.norm(grads),
        'learning_rate': self.schedule(state.step),
        'beta': beta,
    }
    if masks is not None:
      flips = sum(jnp.sum(masks[p] != state.masks[p]) for p in masks)
      step_metrics['mask_flip_rate'] = flips / sum(m.size for m in masks.values())
    new_masks = masks if masks is not None else state.masks
    finite = jnp.isfinite(loss) & jnp.isfinite(step_metrics['grad_norm'])
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, masks=new_masks,
                              nonfinite_step=jnp.where((state.nonfinite_step < 0) & ~finite, state.step,
                                                       state.nonfinite_step))
    if config.get('nonfinite', 'stop') == 'skip':  # keep the previous parameters and optimizer state
      keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
      new_state = new_state.replace(params=keep(params, state.params), opt_state=keep(opt_state, state.opt_state),
                                    masks=keep(new_masks, state.masks))
      step_metrics['skipped_updates'] = 1.0 - finite.astype(jnp.float32)
    if not diagnostics:
      return new_state, step_metrics
    # The gradient that reaches each targeted kernel after the recipe's flow, for the noise diagnostic.
    flowed = grads
    if masks is not None:
      flowed, _ = self.sparsity.transform().update(grads, (), state.params, nm_masks=masks, nm_beta=beta)
    flat = tree_paths.flatten(flowed)
    paths = self.sparsity.targeted_paths
    diag = {'grads': {p: flat[p] for p in paths},
            'masks': {p: (masks[p] if masks is not None else jnp.ones(flat[p].shape, bool)) for p in paths}}
    return new_state, step_metrics, diag

  def train_step_fn(self, plan, diagnostics: bool = False):
    """The jitted step of a plan; the diagnostics variant also returns gradients and masks."""
    key = (plan, diagnostics)
    if key not in self._train_steps:
      outputs = 3 if diagnostics else 2
      self._train_steps[key] = jax.jit(
          functools.partial(self._train_step, plan, diagnostics),
          in_shardings=(self.replicated, self.batch_sharding),
          out_shardings=(self.replicated,) * outputs, donate_argnums=(0,))
    return self._train_steps[key]

  def eval_plan(self):
    """Evaluation always uses the exported model: binary masks at the target N:M."""
    return self.sparsity.final_plan()

  def _eval_extra(self, params):
    plan = self.eval_plan()
    if plan.sparse and self.sparsity.sparse_paths:
      masks = self.sparsity.masks(params, plan)
      return {'sparsity': self.sparsity.collection(masks, jnp.zeros((), jnp.float32))}
    return {}

  def _eval_step_impl(self, params, batch):
    extra = self._eval_extra(params)
    apply_fn = lambda p, *args, **kwargs: self.model.apply({'params': p, **extra}, *args, **kwargs)
    return self.task.eval_sums(apply_fn, params, batch)

  def evaluate(self, params) -> Dict[str, float]:
    if self._eval_step is None:
      self._eval_step = jax.jit(self._eval_step_impl, in_shardings=(self.replicated, self.batch_sharding),
                                out_shardings=self.replicated)
    totals = {}
    for batch in self.data.eval_batches():
      for k, v in jax.device_get(self._eval_step(params, self.shard(batch))).items():
        totals[k] = totals.get(k, 0.0) + float(v)
    results = self.task.finalize(totals)
    if getattr(self.data, 'generates', False):  # GLUE and translation: greedy decoding, then their metric
      results.update(self.data.generation_metrics(self.predict(params)))
    return results

  def predict(self, params) -> list:
    """Greedy predictions (token ids) for every evaluation example of this process, in order."""
    if self._predict_step is None:
      length = self.data.input_shapes['targets'][0]

      def predict(params, batch):
        extra = self._eval_extra(params)
        apply_fn = lambda p, *args, **kwargs: self.model.apply({'params': p, **extra}, *args, **kwargs)
        return tasks.greedy_decode(apply_fn, params, batch['inputs'], length)

      self._predict_step = jax.jit(predict, in_shardings=(self.replicated, self.batch_sharding),
                                   out_shardings=self.batch_sharding)
    out = []
    for batch in self.data.eval_batches():
      predicted = self._predict_step(params, self.shard(batch))
      shards = sorted(predicted.addressable_shards, key=lambda shard: shard.index[0].start or 0)
      local = np.concatenate([np.asarray(shard.data) for shard in shards])  # this process's rows, in order
      out.extend(local[batch['mask'] > 0])
    return out

  def shard(self, batch):
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(self.batch_sharding, x), batch)


def check_workdir(config, workdir: str, force_resume: bool) -> None:
  """Before anything is written: the workdir must be writable, and a run it holds must match the config."""
  probe = workdir
  while probe and not os.path.exists(probe):
    probe = os.path.dirname(probe)
  if probe and (not os.path.isdir(probe) or not os.access(probe, os.W_OK)):
    raise ValueError(f'workdir {workdir!r} cannot be created or written ({probe!r} is not a writable '
                     'directory).')
  saved_path = os.path.join(workdir, 'config.json')
  if force_resume or not os.path.exists(saved_path):
    return
  with open(saved_path) as f:
    saved = json.load(f)
  current = json.loads(config.to_json_best_effort())
  differing = sorted(k for k in set(saved) | set(current)
                     if k not in RESUMABLE_CHANGES and saved.get(k) != current.get(k))
  if differing:
    raise ValueError(f'workdir {workdir!r} holds a run with another config (differs in {differing}); use a new '
                     'workdir, or pass --force_resume to continue it with this config.')


def _truncate_metrics(workdir: str, step: int) -> None:
  """Drops metrics.jsonl records past the restored step, so that a resumed run's metrics continue."""
  records = [r for r in metrics_lib.read_jsonl(workdir) if r['step'] <= step]
  if jax.process_index() == 0 and os.path.exists(os.path.join(workdir, 'metrics.jsonl')):
    with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
      f.writelines(json.dumps(r) + '\n' for r in records)


class _Preemption:
  """SIGTERM (a preemption notice) asks the loop to checkpoint and return at the next step."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
    return False


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       max_steps_this_run: Optional[int] = None,
                       force_resume: bool = False) -> Tuple[TrainState, Dict[str, Any]]:
  """Trains (resuming from the workdir's newest good checkpoint), evaluates, checkpoints.

  `max_steps_this_run` stops after that many steps (checkpointed), for job chaining on time-limited slots;
  SIGTERM does the same at the next step. The next call resumes. A workdir holding a run of another config
  is refused unless `force_resume`. Returns the final state and {'train': last logged train metrics,
  'eval': the last evaluation, 'preempted': whether SIGTERM stopped the run}.
  """
  from clu import periodic_actions  # pylint: disable=g-import-not-at-top  (imports TensorFlow)
  trainer = Trainer(config, workdir)
  check_workdir(config, workdir, force_resume)
  os.makedirs(workdir, exist_ok=True)
  ckpt = checkpoints.Checkpointer(workdir, config.keep_checkpoints)
  state, restored_step = ckpt.restore_latest_good(trainer.abstract_state())
  if state is not None:
    logging.info('Resumed from checkpoint at step %d.', restored_step)
    _truncate_metrics(workdir, restored_step)
  else:
    state = trainer.initial_state()
    parameter_overview.log_parameter_overview(state.params)
    logging.info('Sparse kernels: %s', trainer.sparsity.sparse_paths)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(config.to_json_best_effort(indent=2))
    RunInfo.of(trainer.data).save(workdir)
  logger = metrics_lib.MetricsLogger(workdir)
  total = trainer.total_steps
  step = int(state.step)
  stop = total if max_steps_this_run is None else min(total, step + max_steps_this_run)
  report = periodic_actions.ReportProgress(num_train_steps=total, writer=logger.writer)
  sp = trainer.sparsity
  pending, last_train, final_eval = [], {}, {}
  last_log_time, last_log_step = time.time(), step
  previous_masks = None
  stop_on_nonfinite = config.get('nonfinite', 'stop') == 'stop'
  diagnostics_every = config.get('diagnostics_every_steps', 0)
  noise = diagnostics_lib.GradientNoise()
  training_flops = flops_lib.TrainingFlops(trainer.model, trainer._dummy, sp, config.batch_size)  # pylint: disable=protected-access

  def check_finite(state):
    bad = int(state.nonfinite_step)
    if stop_on_nonfinite and bad >= 0:
      ckpt.close()
      raise NonFiniteError(f'Non-finite loss or gradients at step {bad}; stopped without saving. The last good '
                           f'checkpoint is step {ckpt.latest_step()}. Lower the learning rate, or set '
                           'config.nonfinite="skip" to skip such updates.')

  with _Preemption() as preemption:
    while step < stop and not preemption.requested:
      plan = sp.plan(step)
      end = min(sp.plan_end(step), stop)
      logging.info('Steps %d..%d: %s', step, end, plan)
      step_fn = trainer.train_step_fn(plan)
      for s in range(step, end):
        batch = trainer.shard(trainer.data.train_batch(s))
        if diagnostics_every and s % diagnostics_every == 0:
          state, step_metrics, diag = trainer.train_step_fn(plan, diagnostics=True)(state, batch)
          logger.write(s, 'diag', noise.update(*jax.device_get((diag['grads'], diag['masks']))))
        else:
          state, step_metrics = step_fn(state, batch)
        pending.append(step_metrics)
        done = s + 1
        report(done)
        if done % config.log_every_steps == 0 or done == total:
          check_finite(state)
          scalars = metrics_lib.mean_of(pending)
          now = time.time()
          scalars['steps_per_second'] = (done - last_log_step) / max(now - last_log_time, 1e-9)
          last_log_time, last_log_step = now, done
          scalars['phase'] = {'dense': 0.0, 'sparse': 1.0, 'finetune': 2.0}[plan.phase]
          scalars['train_flops'] = training_flops.cumulative(done)
          if plan.sparse and sp.sparse_paths:
            summary = sp.summary(state.params, state.masks, plan, scalars['beta'], previous_masks)
            scalars.update({k: v for k, v in summary.items() if not k.startswith('nm_exact/')})
            scalars['nm_exact'] = float(np.mean([v for k, v in summary.items() if k.startswith('nm_exact/')]))
            previous_masks = jax.device_get(state.masks)
          logger.write(done, 'train', scalars)
          last_train, pending = scalars, []
        if done % config.eval_every_steps == 0 or done == total:
          final_eval = trainer.evaluate(state.params)
          logger.write(done, 'eval', final_eval)
        if done % config.checkpoint_every_steps == 0 or done == stop or preemption.requested:
          check_finite(state)
          ckpt.save(done, state)
        if preemption.requested:
          logging.warning('SIGTERM: saved a checkpoint at step %d and stopped; rerun to resume.', done)
          break
      step = int(state.step)

  check_finite(state)
  if not final_eval:  # resumed a finished run, or stopped between evaluations
    final_eval = trainer.evaluate(state.params)
  logger.flush()
  ckpt.close()
  results = {'train': last_train, 'eval': final_eval, 'preempted': preemption.requested}
  done = int(state.step)
  if done == total and jax.process_index() == 0:  # the marker of a finished run (sweeps skip it)
    with open(os.path.join(workdir, 'results.json'), 'w') as f:
      json.dump({'step': done, 'eval': final_eval, 'train_flops': training_flops.cumulative(done),
                 'dense_train_flops': training_flops.dense_cumulative(done)}, f)
  return state, results
