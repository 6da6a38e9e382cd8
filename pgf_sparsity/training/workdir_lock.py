"""One live run per workdir: DIR/run.lock names the run that holds it (host, process id, start) and carries a
heartbeat that a background thread refreshes while the run lives.

A second run on a held workdir stops before it writes anything, naming the holder. A holder is stale, and
its lock is taken over, when it ran on this host and its process is gone (kill -9, a crash), or when its
heartbeat is older than `STALE_AFTER_S` (a holder on another host that died). Local files are created
exclusively (O_EXCL); on remote paths (gs://...) the check and the write are two steps, which is enough
against the resubmitted job that the lock is for. With several processes, process 0 holds the lock.
"""
import json
import os
import socket
import threading
import time
from typing import Any, Dict, Optional

from etils import epath

from pgf_sparsity.formats import file_paths

LOCK = 'run.lock'
HEARTBEAT_S = 30.0
STALE_AFTER_S = 600.0


class WorkdirHeldError(ValueError):
  """Another live run holds the workdir."""


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # a process of another user: alive
    return True
  return True


def _stale(holder: Dict[str, Any], now: float) -> bool:
  if holder.get('host') == socket.gethostname() and not _alive(int(holder.get('pid', -1))):
    return True
  return now - float(holder.get('heartbeat', 0.0)) > STALE_AFTER_S


class WorkdirLock:
  """A context manager: holds `workdir` while the block runs (acquire, heartbeat, release)."""

  def __init__(self, workdir: epath.Path):
    self.path = epath.Path(workdir) / LOCK
    self.me = {'host': socket.gethostname(), 'pid': os.getpid(), 'started': time.time()}
    self._stop = threading.Event()
    self._thread: Optional[threading.Thread] = None

  def _record(self) -> str:
    return json.dumps(dict(self.me, heartbeat=time.time()))

  def _holder(self) -> Optional[Dict[str, Any]]:
    try:
      return json.loads(self.path.read_text())
    except (FileNotFoundError, ValueError):  # gone, or caught half written: treat as free
      return None

  def acquire(self) -> None:
    """Takes the lock, or raises WorkdirHeldError naming its live holder."""
    holder = self._holder()
    if holder is not None and not _stale(holder, time.time()):
      started = time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(float(holder.get('started', 0.0))))
      raise WorkdirHeldError(
          f'workdir {str(self.path.parent)!r} is held by a live run (host {holder.get("host")}, process '
          f'{holder.get("pid")}, started {started}); wait for it to end, or use another workdir.')
    try:
      self.path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # e.g. under /proc: the parent exists, but nothing can be created in it
      raise ValueError(f'workdir {str(self.path.parent)!r} cannot be created ({e.strerror or e}).') from None
    if holder is None and not file_paths.is_url(self.path):
      try:  # exclusive: of two runs started together, one wins
        with open(os.fspath(self.path), 'x') as f:
          f.write(self._record())
        return self._start_heartbeat()
      except FileExistsError:
        return self.acquire()
    self.path.write_text(self._record())  # a stale holder's lock, or a remote path
    self._start_heartbeat()

  def _start_heartbeat(self) -> None:
    def beat():
      while not self._stop.wait(HEARTBEAT_S):
        try:
          self.path.write_text(self._record())
        except OSError:  # a full disk: the run itself reports it; the pid still shows this holder alive
          pass
    self._thread = threading.Thread(target=beat, name='pgf_sparsity workdir heartbeat', daemon=True)
    self._thread.start()

  def release(self) -> None:
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
      holder = self._holder()
      if holder is not None and holder.get('pid') == self.me['pid'] and holder.get('host') == self.me['host']:
        self.path.unlink()

  def __enter__(self):
    self.acquire()
    return self

  def __exit__(self, *exc):
    self.release()
    return False
