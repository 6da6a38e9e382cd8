"""Metric output: a TensorBoard event file and a JSON-lines file, one object per logged step."""
import contextlib
import json
import os
import socket
import time
from typing import Mapping

import jax
import numpy as np
from etils import epath

from pgf_sparsity.formats import file_paths
from pgf_sparsity.training.checkpoints import WriteFailedError


class MetricsLogger:
  """write(step, split, scalars) goes to TensorBoard (as split/name) and to DIR/metrics.jsonl."""

  def __init__(self, workdir: epath.PathLike):
    self.is_lead = jax.process_index() == 0
    self.tensorboard = TensorBoardScalars(epath.Path(workdir)) if self.is_lead else None
    self.path = epath.Path(workdir) / 'metrics.jsonl'

  def write(self, step: int, split: str, scalars: Mapping[str, float]) -> None:
    """Raises checkpoints' WriteFailedError, naming the file and the step, when the disk refuses the row."""
    scalars = {k: float(np.asarray(v)) for k, v in scalars.items()}
    if not self.is_lead:
      return
    row = json.dumps({'step': int(step), 'split': split, **scalars}) + '\n'
    what = f'the {split} metrics of step {step}'
    with self._naming(self.tensorboard.path, what):
      self.tensorboard.write_scalars(step, {f'{split}/{k}': v for k, v in scalars.items()})
    with self._naming(self.path, what):
      with self.path.open('a') as f:
        f.write(row)

  @contextlib.contextmanager
  def _naming(self, target: epath.Path, what: str):
    """An OSError within, as WriteFailedError naming `what` and the file; metrics.jsonl is first cut back to
    whole lines (a full disk may have taken a row in part)."""
    try:
      yield
    except OSError as e:
      _cut_partial_row(self.path)
      raise WriteFailedError(f'could not append {what} to {target} ({e.strerror or e})') from e

  def close(self) -> None:
    if self.tensorboard is not None:
      self.tensorboard.close()


class TensorBoardScalars:
  """Scalars in a TensorBoard event file (`events.out.tfevents.*`), written with TensorBoard's own record
  writer and protocol buffers. clu's writers would import TensorFlow (seconds of every run's start-up) only to
  write these records; runs on in-memory data need no TensorFlow at all."""

  def __init__(self, logdir: epath.Path):
    # pylint: disable=g-import-not-at-top
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer import record_writer
    self._event, self._summary = event_pb2.Event, summary_pb2.Summary
    name = f'events.out.tfevents.{time.time():.6f}.{socket.gethostname()}.{os.getpid()}.v2'
    self.path = logdir / name
    self._file = self.path.open('wb')
    self._records = record_writer.RecordWriter(self._file)
    self._write(self._event(wall_time=time.time(), file_version='brain.Event:2'))

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    values = [self._summary.Value(tag=tag, simple_value=value) for tag, value in scalars.items()]
    self._write(self._event(wall_time=time.time(), step=step, summary=self._summary(value=values)))

  def _write(self, event) -> None:
    self._records.write(event.SerializeToString())
    self._file.flush()  # each logged step readable at once, as TensorBoard polls the file

  def close(self) -> None:
    self._file.close()


def _cut_partial_row(path: epath.Path) -> None:
  """Cuts a row that the disk took only in part, so that metrics.jsonl stays whole lines."""
  try:
    text = path.read_text()
    if text and not text.endswith('\n'):
      path.write_text(text[:text.rfind('\n') + 1])
  except OSError:
    pass


def read_jsonl(workdir: epath.PathLike):
  """All records of DIR/metrics.jsonl (for tests, tables and plots)."""
  path = epath.Path(workdir) / 'metrics.jsonl'
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate(workdir: epath.PathLike, step: int) -> None:
  """Drops metrics.jsonl records past `step` (the restored checkpoint), so that a resumed run's metrics
  continue without duplicates."""
  path = epath.Path(workdir) / 'metrics.jsonl'
  if jax.process_index() == 0 and path.exists():
    kept = ''.join(json.dumps(r) + '\n' for r in read_jsonl(workdir) if r['step'] <= step)
    file_paths.write_atomically(path, kept)  # a full disk must not cost the records kept


def mean_of(step_metrics) -> dict:
  """Averages a list of per-step metric dicts (device arrays fetched once)."""
  fetched = jax.device_get(step_metrics)
  return {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
