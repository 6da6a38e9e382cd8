"""orbax checkpointing of the train state: periodic saves, keep-last-k, resume from the newest good one.

Every checkpoint holds the state and a checksum of its bits. Restoring verifies the checksum, so a
corrupted or partly written checkpoint is detected and the previous good one is used instead (orbax itself
never exposes a checkpoint whose write did not finish: it writes to a temporary name and renames). The
checksum is computed where the state lives, shard by shard, and only two words per array reach the host: no
process ever gathers the state, however it is sharded.
"""
import contextlib
import logging as std_logging
import os
import shutil
import signal
import sys
import threading
import traceback
import zlib
from typing import Any, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from pgf_sparsity.formats import file_paths


class NoUsableCheckpointError(RuntimeError):
  """Checkpoints exist but none of them can be read back intact."""


class WriteFailedError(RuntimeError):
  """A file of the run (a checkpoint, the metrics) could not be written: a full disk, a lost mount."""


def reason(error: BaseException) -> str:
  """The first line of the innermost cause (orbax wraps its writer threads' errors)."""
  while error.__cause__ is not None or error.__context__ is not None:
    error = error.__cause__ or error.__context__
  text = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
  return (text.splitlines() or [type(error).__name__])[0][:200]


def _words(x: jax.Array) -> jax.Array:
  """The array's bits as uint32 words: 8-byte types split in two (a trailing axis), narrower ones widened."""
  if x.dtype.itemsize >= 4:
    return jax.lax.bitcast_convert_type(x, jnp.uint32)
  narrow = {1: jnp.uint8, 2: jnp.uint16}[x.dtype.itemsize]
  return (x.astype(narrow) if x.dtype == jnp.bool_ else jax.lax.bitcast_convert_type(x, narrow)).astype(jnp.uint32)


# The checksum's mixing constants, shared by its compiled and its numpy form (which must agree bit for bit).
_INDEX_MIX, _WORD_MIX, _MIX_SHIFT = 0x9E3779B9, 0x85EBCA6B, 15


@jax.jit
def _array_checksum(x: jax.Array) -> jax.Array:
  """Two position-dependent sums of the words, mod 2^32: any change of one word changes the second (its
  weight is odd), and the mixed first one catches what cancels in a linear sum. Built from iotas of the
  array's own shape rather than a reshape, so a sharded array is summed in place."""
  words = _words(x)
  index = jnp.zeros(words.shape, jnp.uint32)
  for axis in range(words.ndim):
    index = index * jnp.uint32(words.shape[axis]) + jax.lax.broadcasted_iota(jnp.uint32, words.shape, axis)
  mixed = (words ^ (index * jnp.uint32(_INDEX_MIX))) * jnp.uint32(_WORD_MIX)
  mixed = mixed ^ (mixed >> _MIX_SHIFT)
  return jnp.stack([jnp.sum(mixed, dtype=jnp.uint32), jnp.sum(words * (2 * index + 1), dtype=jnp.uint32)])


def _host_array_checksum(x: np.ndarray) -> np.ndarray:
  """_array_checksum's two sums, computed by numpy (whose uint32 arithmetic wraps mod 2^32 as XLA's does)."""
  x = np.ascontiguousarray(x)
  if x.dtype.itemsize >= 4:
    words = x.view(np.uint32)
  else:
    words = x.view({1: np.uint8, 2: np.uint16}[x.dtype.itemsize]).astype(np.uint32)
  words = words.reshape(-1)  # row-major: the position of each word is the index the iotas build
  index = np.arange(words.size, dtype=np.uint32)
  mixed = (words ^ (index * np.uint32(_INDEX_MIX))) * np.uint32(_WORD_MIX)
  mixed ^= mixed >> np.uint32(_MIX_SHIFT)
  return np.asarray([mixed.sum(dtype=np.uint32), (words * (2 * index + np.uint32(1))).sum(dtype=np.uint32)],
                    np.uint32)


def _on_the_host(x: jax.Array) -> bool:
  """Whether this process's host memory holds the whole array (numpy reads it with no transfer from a device)."""
  return x.is_fully_addressable and all(device.platform == 'cpu' for device in x.devices())


def state_checksum(state: Any) -> str:
  """Hex digest of every array's dtype, shape and bits."""
  leaves = jax.tree.leaves(state)
  layout = ';'.join(f'{x.dtype}{tuple(x.shape)}' for x in leaves)
  # Arrays in this host's memory are summed by numpy (about as fast as a compiled program, and a state holds
  # arrays of dozens of shapes, each a program to compile). Others by one small program per array (compiled
  # once per shape, dtype and sharding) rather than one over the whole tree, which took seconds to compile for
  # each new model's state; each is fetched before the next starts: programs over arrays sharded across
  # processes must not overlap.
  sums = np.asarray([_host_array_checksum(np.asarray(x)) if _on_the_host(x) else np.asarray(_array_checksum(x))
                     for x in leaves], np.uint32)
  return f'{zlib.crc32(layout.encode()):08x}' + sums.astype('>u4').tobytes().hex()


def _is_an_abandoned_orbax_call(unraisable) -> bool:
  """Whether the ignored exception is, or was raised from, a refusal of a closed event loop."""
  error, seen = unraisable.exc_value, set()
  while error is not None and id(error) not in seen:
    if isinstance(error, RuntimeError) and str(error) == 'Event loop is closed':
      return True
    seen.add(id(error))
    error = error.__cause__ or error.__context__
  return False


# What asyncio logs for a task whose error nobody awaited: '<Task|Future|...> exception was never retrieved', and
# for one still failing when asyncio.run() shuts its loop down.
_UNAWAITED_ERROR_MESSAGES = ('exception was never retrieved', 'unhandled exception during asyncio.run() shutdown')


def _is_an_abandoned_orbax_task(record: std_logging.LogRecord) -> bool:
  """Whether asyncio reports the error of an orbax task that nobody awaited (its traceback passes through orbax)."""
  first_line = str(record.msg).split('\n', 1)[0]
  if not first_line.endswith(_UNAWAITED_ERROR_MESSAGES) or not record.exc_info:
    return False
  return any(f'{os.sep}orbax{os.sep}' in frame.filename for frame in traceback.extract_tb(record.exc_info[2]))


class _DropAbandonedOrbaxTasks(std_logging.Filter):

  def filter(self, record):
    return not _is_an_abandoned_orbax_task(record)


def quiet_abandoned_orbax_work() -> None:
  """Call before an orbax read or write. When one of its reads or writes fails, the others still finish, each
  reporting to orbax's event loop, closed by then: Python would print every refusal as an ignored exception
  (hundreds of tracebacks for one bad file), and asyncio, when it collects a task whose failure nobody awaited
  any more, logs that failure with its traceback. From the first call on those two reports alone are dropped (the
  failure itself is the restore's or the save's error); other ignored exceptions and asyncio's other errors
  print."""
  asyncio_logger = std_logging.getLogger('asyncio')
  if not any(isinstance(f, _DropAbandonedOrbaxTasks) for f in asyncio_logger.filters):
    asyncio_logger.addFilter(_DropAbandonedOrbaxTasks())
  previous = sys.unraisablehook
  if getattr(previous, 'drops_abandoned_orbax_work', False):
    return

  def hook(unraisable):
    if not _is_an_abandoned_orbax_call(unraisable):
      previous(unraisable)

  hook.drops_abandoned_orbax_work = True
  sys.unraisablehook = hook


def _bytes_under(directory: epath.Path) -> int:
  return sum(os.path.getsize(os.path.join(root, name))
             for root, _, names in os.walk(os.fspath(directory)) for name in names)


class Checkpointer:

  def __init__(self, workdir: epath.PathLike, max_to_keep: int = 3):
    """`workdir`: an absolute path or URL (file_paths.absolute)."""
    quiet_abandoned_orbax_work()  # before any of this checkpointer's reads and writes
    self.directory = epath.Path(workdir) / 'checkpoints'
    self.manager = ocp.CheckpointManager(
        self.directory, item_names=('state', 'digest'),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))
    self._in_flight = None  # the step whose background write has not been waited for

  def all_steps(self):
    return sorted(self.manager.all_steps())

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def save(self, step: int, state: Any) -> None:
    """Starts writing the checkpoint of `step` in the background, once the previous one is written; a write
    that fails raises WriteFailedError naming its step, with nothing partial left behind."""
    self.wait()
    self._check_room(step, state)
    with self._failing_as(step):
      self.manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), digest=ocp.args.JsonSave({'checksum': state_checksum(state)})))
    self._in_flight = step

  def _check_room(self, step: int, state: Any) -> None:
    """On a local disk, refuses a save that cannot fit (the newest checkpoint's size, or the state's bytes for
    the first) before orbax starts: its writer threads report a full disk only with a burst of tracebacks."""
    if file_paths.is_url(self.directory) or jax.process_index() != 0:
      return
    newest = self.latest_step()
    needed = (_bytes_under(self.directory / str(newest)) if newest is not None else
              sum(x.nbytes for x in jax.tree.leaves(state)))
    free = shutil.disk_usage(os.fspath(self.directory)).free
    if free < needed * 1.05 + 2 ** 16:
      raise WriteFailedError(f'could not write the checkpoint of step {step} to {self.directory} (No space left '
                             f'on device: it needs about {needed / 2**20:.1f} MiB, {free / 2**20:.1f} MiB are free)')

  @contextlib.contextmanager
  def _failing_as(self, step: int):
    try:
      yield
    except Exception as e:  # pylint: disable=broad-except  (orbax re-raises its writer threads' errors as is)
      self._discard_partial()
      self.manager.reload()
      raise WriteFailedError(f'could not write the checkpoint of step {step} to {self.directory} ({reason(e)})'
                             ) from e

  def _discard_partial(self) -> None:
    """Removes checkpoints whose write did not finish (orbax's temporary names), so that none is ever taken
    for a checkpoint and the space they hold is free again."""
    if jax.process_index() == 0 and self.directory.exists():
      for partial in self.directory.glob('*.orbax-checkpoint-tmp*'):
        partial.rmtree(missing_ok=True)

  def abandon(self) -> None:
    """After a failed write: ends the background work (whose error is the one being reported), removes what
    was written in part, and closes; latest_step() still names the newest complete checkpoint."""
    try:
      self.close()
    except WriteFailedError:
      pass
    self._discard_partial()
    self.manager.reload()

  def restore(self, abstract_state: Any, step: int) -> Any:
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), digest=ocp.args.JsonRestore()))
    if restored['digest'].get('checksum') != state_checksum(restored['state']):
      raise ValueError('its contents do not match the checksum written with it')
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
      aside = self.directory.parent / 'checkpoints_unusable'
      aside.mkdir(parents=True, exist_ok=True)
      for step in steps:
        (self.directory / str(step)).rename(aside / str(step))
        logging.warning('Moved the unusable checkpoint of step %d to %s.', step, aside)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices('pgf_sparsity: unusable checkpoints moved')
    self.manager.reload()

  def wait(self) -> None:
    """Blocks until the background save in flight (if any) is written."""
    step, self._in_flight = self._in_flight, None
    if step is not None:
      with self._failing_as(step):
        self.manager.wait_until_finished()

  def close(self) -> None:
    try:
      self.wait()
    finally:
      self.manager.close()


class Preemption:
  """Within the block, SIGTERM (a preemption notice) stops the run at a step that every process agrees on:
  `reached(step)` turns True at that same step on all of them, and the loop checkpoints and returns.

  With several processes, JAX's preemption sync manager (started by `jax.distributed.initialize`; it
  catches SIGTERM on any process) picks the step; in a single process, a SIGTERM handler installed here.
  """

  def __init__(self):
    self.requested = False
    self._previous = None
    self._synchronised = jax.process_count() > 1

  def __enter__(self):
    if not self._synchronised and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def reached(self, step: int) -> bool:
    """Whether the run stops after `step` steps; call it once per step, on every process."""
    if self._synchronised:
      self.requested = self.requested or multihost_utils.reached_preemption_sync_point(step)
    return self.requested

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
    return False
