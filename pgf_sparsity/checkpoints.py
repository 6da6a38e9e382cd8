"""orbax checkpointing of the train state: periodic saves, keep-last-k, resume from the newest good one.

Every checkpoint holds the state and a SHA-256 digest of its bytes. Restoring verifies the digest, so a
corrupted or partly written checkpoint is detected and the previous good one is used instead (orbax itself
never exposes a checkpoint whose write did not finish: it writes to a temporary name and renames).
"""
import hashlib
import os
import signal
import threading
from typing import Any, Optional, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging


class NoUsableCheckpointError(RuntimeError):
  """Checkpoints exist but none of them can be read back intact."""


def state_digest(state: Any) -> str:
  digest = hashlib.sha256()
  for leaf in jax.tree.leaves(jax.device_get(state)):
    array = np.ascontiguousarray(np.asarray(leaf))
    digest.update(str((array.dtype, array.shape)).encode())
    digest.update(array.tobytes())
  return digest.hexdigest()


class Checkpointer:

  def __init__(self, workdir: str, max_to_keep: int = 3):
    self.directory = os.path.abspath(os.path.join(workdir, 'checkpoints'))
    self.manager = ocp.CheckpointManager(
        self.directory, item_names=('state', 'digest'),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))

  def all_steps(self):
    return sorted(self.manager.all_steps())

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def save(self, step: int, state: Any) -> None:
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), digest=ocp.args.JsonSave({'sha256': state_digest(state)})))

  def restore(self, abstract_state: Any, step: int) -> Any:
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), digest=ocp.args.JsonRestore()))
    if restored['digest'].get('sha256') != state_digest(restored['state']):
      raise ValueError('its contents do not match the digest written with it')
    return restored['state']

  def restore_latest_good(self, abstract_state: Any) -> Tuple[Optional[Any], Optional[int]]:
    """The newest checkpoint that reads back intact, falling back step by step; (None, None) if none exist."""
    steps = self.all_steps()
    unusable = []
    for step in reversed(steps):
      try:
        state = self.restore(abstract_state, step)
      except Exception as e:  # pylint: disable=broad-except  (any read failure means: try the previous one)
        logging.warning('Checkpoint at step %d in %s is unusable (%s: %s); falling back to the previous one.',
                        step, self.directory, type(e).__name__, (str(e).splitlines() or [''])[0][:200])
        unusable.append(step)
        continue
      self._quarantine(unusable)
      return state, step
    if steps:
      raise NoUsableCheckpointError(f'None of the checkpoints {steps} in {self.directory} can be read back intact; '
                                    'move the directory away to start afresh.')
    return None, None

  def _quarantine(self, steps) -> None:
    """Moves unusable checkpoints aside (kept for inspection) so that their steps can be saved again."""
    if not steps:
      return
    if jax.process_index() == 0:
      aside = self.directory + '_unusable'
      os.makedirs(aside, exist_ok=True)
      for step in steps:
        os.replace(os.path.join(self.directory, str(step)), os.path.join(aside, str(step)))
        logging.warning('Moved the unusable checkpoint of step %d to %s.', step, aside)
    self.manager.reload()

  def wait(self) -> None:
    """Blocks until the background save in flight (if any) is written."""
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


class Preemption:
  """Within the block, SIGTERM (a preemption notice) sets `requested`: the loop checkpoints and returns at
  the next step."""

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
