"""Metric output: clu writers (TensorBoard + log) and a JSON-lines file, one object per logged step."""
import json
from typing import Mapping

import jax
import numpy as np
from etils import epath


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
    scalars = {k: float(np.asarray(v)) for k, v in scalars.items()}
    self.writer.write_scalars(step, {f'{split}/{k}': v for k, v in scalars.items()})
    if self.is_lead:
      with self.path.open('a') as f:
        f.write(json.dumps({'step': int(step), 'split': split, **scalars}) + '\n')

  def flush(self) -> None:
    self.writer.flush()


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
    path.write_text(''.join(json.dumps(r) + '\n' for r in read_jsonl(workdir) if r['step'] <= step))


def mean_of(step_metrics) -> dict:
  """Averages a list of per-step metric dicts (device arrays fetched once)."""
  fetched = jax.device_get(step_metrics)
  return {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
