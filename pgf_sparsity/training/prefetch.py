"""The next batches are prepared (read, augmented, placed on the devices) in a background thread while the
current step runs, so that host input does not leave the devices idle.

Batches are a function of the step (data/base.py), so the thread simply runs ahead over the steps to come.
"""
import queue
import threading
import time
from typing import Any, Callable


class Prefetcher:
  """get(step) returns make(step) for start <= step < stop, in order, computed up to `depth` steps ahead;
  `waited` accumulates the seconds get() blocked (time the devices would sit idle for input)."""

  def __init__(self, make: Callable[[int], Any], start: int, stop: int, depth: int = 2):
    self._make, self._next_step, self._stop = make, start, stop
    self._ready: queue.Queue = queue.Queue(maxsize=max(depth, 1))
    self._closing = threading.Event()
    self.waited = 0.0
    self._thread = threading.Thread(target=self._run, args=(start,), name='prefetch', daemon=True)
    self._thread.start()

  def _run(self, start: int) -> None:
    for step in range(start, self._stop):
      try:
        item = (self._make(step), None)
      except Exception as e:  # pylint: disable=broad-except  (re-raised in the training thread by get)
        item = (None, e)
      while not self._closing.is_set():
        try:
          self._ready.put(item, timeout=0.1)
          break
        except queue.Full:
          continue
      if self._closing.is_set() or item[1] is not None:
        return

  def get(self, step: int) -> Any:
    if step != self._next_step:
      raise ValueError(f'Prefetcher serves step {self._next_step} next, not {step}.')
    begin = time.perf_counter()
    batch, error = self._ready.get()
    self.waited += time.perf_counter() - begin
    self._next_step += 1
    if error is not None:
      raise error
    return batch

  def close(self) -> None:
    self._closing.set()
    self._thread.join()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
    return False
