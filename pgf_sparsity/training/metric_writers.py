"""Metric output: clu writers (TensorBoard + log) and a JSON-lines file, one object per logged step."""
import json
from typing import Mapping

import jax
import numpy as np
from etils import epath

from pgf_sparsity.formats import file_paths
from pgf_sparsity.training.checkpoints import WriteFailedError


class MetricsLogger:
  """write(step, split, scalars) goes to TensorBoard (as split/name) and to DIR/metrics.jsonl."""

  def __init__(self, workdir: epath.PathLike):
    # clu's writers import TensorFlow: imported here so that the rest of the package (steps, export)
    # works where TensorFlow is not installed, e.g. accelerator images.
    from clu import metric_writers  # pylint: disable=g-import-not-at-top
    self.is_lead = jax.process_index() == 0
    self.writer = metric_writers.create_default_writer(str(epath.Path(workdir)), just_logging=not self.is_lead)
    self.path = epath.Path(workdir) / 'metrics.jsonl'

  def write(self, step: int, split: str, scalars: Mapping[str, float]) -> None:
    """Raises checkpoints' WriteFailedError, naming the file and the step, when the disk refuses the row."""
    scalars = {k: float(np.asarray(v)) for k, v in scalars.items()}
    self.writer.write_scalars(step, {f'{split}/{k}': v for k, v in scalars.items()})
    if self.is_lead:
      row = json.dumps({'step': int(step), 'split': split, **scalars}) + '\n'
      try:
        with self.path.open('a') as f:
          f.write(row)
      except OSError as e:
        _cut_partial_row(self.path)
        raise WriteFailedError(f'could not append the {split} metrics of step {step} to {self.path} '
                               f'({e.strerror or e})') from e

  def flush(self) -> None:
    self.writer.flush()


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
