"""Phases, the mask value beta(t) of pruned weights, and SDGF pattern frames: pure functions of the step.

Training = dense phase -> sparse phase (the recipe) -> fine-tune phase (binary masks at the target N:M).
The decay clock t counts steps from the start of the sparse phase. Phase and frame are decided on the host
(they pick the compiled step: at most one compilation per phase and frame); beta is computed from a traced
step inside the jitted step, so a whole MDGF run compiles once.
"""
import dataclasses
import math
from typing import List, Optional, Sequence, Tuple

import jax.numpy as jnp

from pgf_sparsity.sparsity import nm

Pattern = Tuple[int, int]

DENSE, SPARSE, FINETUNE = 'dense', 'sparse', 'finetune'
BETA_KINDS = ('zero', 'linear', 'exponential')
SDGF_KINDS = ('stepwise', 'geometric', 'custom')


@dataclasses.dataclass(frozen=True)
class Duration:
  """A phase length in one unit: steps, a fraction of training, or epochs. Validated on construction,
  converted to steps once the run length is known."""
  name: str
  steps: Optional[int] = None
  fraction: Optional[float] = None
  epochs: Optional[float] = None

  def __post_init__(self):
    given = [k for k in ('steps', 'fraction', 'epochs') if getattr(self, k) is not None]
    if len(given) > 1:
      raise ValueError(f'{self.name}: give the duration in one unit only, got {given}.')
    for key in given:
      value = getattr(self, key)
      if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f'{self.name}: {key} must be a finite number, got {value!r}.')
      if value < 0:
        raise ValueError(f'{self.name}: duration must be >= 0, got {value} {key}.')
    if self.fraction is not None and self.fraction > 1.0:
      raise ValueError(f'{self.name}: fraction must lie in [0, 1], got {self.fraction}.')

  def to_steps(self, total_steps: int, steps_per_epoch: Optional[int] = None) -> int:
    """The duration in steps (0 when no unit is given); epochs need `steps_per_epoch`."""
    if self.steps is not None:
      return int(self.steps)
    if self.fraction is not None:
      return int(round(self.fraction * total_steps))
    if self.epochs is not None:
      if not steps_per_epoch:
        raise ValueError(f'{self.name}: a duration in epochs needs steps_per_epoch.')
      return int(round(self.epochs * steps_per_epoch))
    return 0


@dataclasses.dataclass(frozen=True)
class Phases:
  """Step boundaries: [0, dense) dense, [dense, dense + sparse) sparse, the rest fine-tune."""
  total_steps: int
  dense_steps: int = 0
  finetune_steps: int = 0

  def __post_init__(self):
    if self.total_steps <= 0:
      raise ValueError(f'total_steps must be positive, got {self.total_steps}.')
    if self.dense_steps < 0 or self.finetune_steps < 0:
      raise ValueError('Phase durations must be >= 0.')
    if self.dense_steps + self.finetune_steps > self.total_steps:
      raise ValueError(f'Dense ({self.dense_steps}) plus fine-tune ({self.finetune_steps}) steps exceed '
                       f'the {self.total_steps} training steps.')

  @property
  def sparse_start(self) -> int:
    return self.dense_steps

  @property
  def finetune_start(self) -> int:
    return self.total_steps - self.finetune_steps

  @property
  def sparse_steps(self) -> int:
    return self.finetune_start - self.sparse_start

  def phase(self, step: int) -> str:
    if step < self.sparse_start:
      return DENSE
    return SPARSE if step < self.finetune_start else FINETUNE

  def sparse_clock(self, step):
    """t: steps since the start of the sparse phase (0 before it). Works on ints and traced arrays."""
    if isinstance(step, int):
      return max(step - self.sparse_start, 0)
    return jnp.maximum(step - self.sparse_start, 0)


def beta(kind: str, t, alpha: float = 0.0):
  """The mask value of pruned weights.

  Args:
    kind: 'zero' (binary masks), 'linear' or 'exponential'.
    t: the sparse clock, steps since the sparse phase began (an int or a traced array).
    alpha: the decay coefficient.

  Returns:
    A float32 scalar: 0, max(1 - alpha t, 0) or exp(-alpha t).
  """
  if kind == 'zero':
    return jnp.zeros((), jnp.float32)
  t = jnp.asarray(t, jnp.float32)
  if kind == 'linear':
    return jnp.maximum(1.0 - alpha * t, 0.0)
  if kind == 'exponential':
    return jnp.exp(-alpha * t)
  raise ValueError(f'Unknown beta schedule {kind!r}; choose one of {BETA_KINDS}.')


def decay_alpha(kind: str, sparse_steps: float, target_beta: float = 0.01, fraction: float = 0.8) -> float:
  """The decay coefficient that brings beta to `target_beta` after `fraction` of the sparse phase.

  Exponential: ln(1 / beta*) / (f S); linear: (1 - beta*) / (f S) (docs/method.md). Each schedule needs its
  own: with the exponential formula, linear would reach 0 after about a fifth of the window.

  Args:
    kind: 'linear' or 'exponential'.
    sparse_steps: S, the length of the sparse phase in steps.
    target_beta: beta*, in (0, 1).
    fraction: f, in (0, 1].

  Returns:
    alpha, per step.
  """
  if not 0.0 < target_beta < 1.0 or not 0.0 < fraction <= 1.0:
    raise ValueError(f'decay_alpha needs 0 < target_beta < 1 and 0 < fraction <= 1, got {target_beta}, {fraction}.')
  steps = max(fraction * sparse_steps, 1.0)
  if kind == 'exponential':
    return math.log(1.0 / target_beta) / steps
  if kind == 'linear':
    return (1.0 - target_beta) / steps
  raise ValueError(f'Only the linear and exponential schedules decay, got {kind!r}.')


def sdgf_patterns(kind: str, n: int, m: int, custom: Optional[Sequence[Pattern]] = None) -> List[Pattern]:
  """The N:M pattern of every SDGF frame, ending at the target n:m.

  stepwise: (M-1):M, then (M/2^i):M for i >= 1 down to n:m, e.g. 1:8 -> 7:8, 4:8, 2:8, 1:8.
  geometric: (n*2^(3-i)):(m*2^(3-i)) for i = 0..3, e.g. 1:8 -> 8:64, 4:32, 2:16, 1:8.
  custom: the given list, which must end at n:m.

  Args:
    kind: 'stepwise', 'geometric' or 'custom'.
    n: the target's kept weights per group.
    m: the target's group size.
    custom: the patterns of kind 'custom'.

  Returns:
    [(n_0, m_0), ..., (n, m)], one pattern per frame.
  """
  nm.validate_pattern(n, m)
  if kind == 'stepwise':
    if m & (m - 1) or n & (n - 1):
      raise ValueError(f'SDGF-stepwise needs powers of two for N and M, got {n}:{m}.')
    frames = [(m - 1, m)] + [(m >> i, m) for i in range(1, int(math.log2(m // n)) + 1)]
    if n == m:
      frames = [(m, m)]
    # 1:2 gives frames (1,2),(1,2): keep one frame per distinct pattern.
    return [p for i, p in enumerate(frames) if i == 0 or p != frames[i - 1]]
  if kind == 'geometric':
    return [(n * 2**(3 - i), m * 2**(3 - i)) for i in range(4)]
  if kind == 'custom':
    if not custom:
      raise ValueError('SDGF-custom needs a non-empty list of patterns.')
    frames = [tuple(p) for p in custom]
    for p in frames:
      if len(p) != 2:
        raise ValueError(f'SDGF-custom patterns are (N, M) pairs, got {p!r}.')
      nm.validate_pattern(*p)
    if frames[-1] != (n, m):
      raise ValueError(f'SDGF-custom patterns must end at the target {n}:{m}, got {frames[-1]}.')
    return frames
  raise ValueError(f'Unknown SDGF schedule {kind!r}; choose one of {SDGF_KINDS}.')


def frame_index(t: int, sparse_steps: int, num_frames: int) -> int:
  """The SDGF frame of a step.

  Args:
    t: the sparse clock.
    sparse_steps: the sparse phase's length.
    num_frames: frames the phase is split into, of equal length.

  Returns:
    t * num_frames // sparse_steps, at most the last frame.
  """
  if sparse_steps <= 0:
    return num_frames - 1
  return min(t * num_frames // sparse_steps, num_frames - 1)


def frame_start(frame: int, sparse_steps: int, num_frames: int) -> int:
  """The first sparse-clock step of an SDGF frame (the inverse of frame_index).

  Args:
    frame: the frame.
    sparse_steps: the sparse phase's length.
    num_frames: frames the phase is split into.

  Returns:
    The smallest t with frame_index(t, sparse_steps, num_frames) == frame.
  """
  return -(-frame * sparse_steps // num_frames)
