"""The optimizer of a run: the recipe's gradient flow, then gradient clipping, then AdamW (weight decay on
kernels) or Adafactor (T5X's defaults), on a learning-rate schedule: warmup-cosine (with an optional cooldown
at the minimum rate), T5X's inverse square root, or constant."""
import jax
import jax.numpy as jnp
import optax

OPTIMIZERS = ('adamw', 'adafactor')
SCHEDULES = ('cosine', 'rsqrt', 'constant')
ADAMW_ONLY = ('weight_decay', 'b1', 'b2', 'eps')
COSINE_ONLY = ('init_learning_rate', 'min_learning_rate', 'cooldown_epochs')


def _warmup_steps(opt, steps_per_epoch: int) -> int:
  if opt.warmup_epochs is not None:
    return int(round(opt.warmup_epochs * steps_per_epoch))
  return int(opt.warmup_steps or 0)


def learning_rate_schedule(opt, total_steps: int, steps_per_epoch: int) -> optax.Schedule:
  """`opt` is config.optimizer (completed by config_lib); warmup and cooldown may be given in epochs."""
  kind = opt.schedule
  warmup = _warmup_steps(opt, steps_per_epoch)
  if kind == 'constant':
    return optax.constant_schedule(opt.learning_rate)
  if kind == 'rsqrt':  # T5X: learning_rate until `warmup` steps, then learning_rate * sqrt(warmup / step)
    floor = max(warmup, 1)
    return lambda step: opt.learning_rate * (floor / jnp.maximum(step, floor)) ** 0.5
  # Cooldown: the last epochs stay at the minimum learning rate (timm's cooldown_epochs).
  cooldown = int(round((opt.cooldown_epochs or 0) * steps_per_epoch))
  decay_steps = max(total_steps - cooldown, 1)
  if warmup >= decay_steps:  # optax would fail inside with 'positive decay_steps', naming neither key
    raise ValueError(f'The warmup ({warmup} steps) must end before the cosine decay does (step {decay_steps}: '
                     f'total_steps {total_steps}, cooldown {cooldown} steps); lower optimizer.warmup_steps '
                     '(or warmup_epochs) or raise total_steps.')
  min_lr = opt.min_learning_rate
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=opt.init_learning_rate, peak_value=opt.learning_rate,
      warmup_steps=warmup, decay_steps=decay_steps, end_value=min_lr)
  if not cooldown:
    return schedule
  return optax.join_schedules([schedule, optax.constant_schedule(min_lr)], [decay_steps])


def _is_kernel(params):
  """Weight decay on kernels only (not biases, norms, position embeddings, the class token)."""
  return jax.tree_util.tree_map_with_path(lambda path, _: getattr(path[-1], 'key', None) == 'kernel', params)


def make_optimizer(opt, gradient_flow: optax.GradientTransformationExtraArgs,
                   schedule: optax.Schedule) -> optax.GradientTransformationExtraArgs:
  """The recipe's gradient flow comes first, so that SR-STE's term is clipped and adapted like the gradient."""
  chain = [gradient_flow]
  if opt.grad_clip_norm:
    chain.append(optax.clip_by_global_norm(opt.grad_clip_norm))
  if opt.name == 'adafactor':
    chain.append(optax.adafactor(schedule))  # T5X's: decay 0.8, factored, update clipping 1.0, parameter scale
  else:
    chain.append(optax.adamw(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps, weight_decay=opt.weight_decay,
                             mask=_is_kernel))
  return optax.chain(*chain)
