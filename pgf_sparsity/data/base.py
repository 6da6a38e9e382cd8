"""The one interface between input pipelines and the training loop.

A pipeline declares what the run's shapes depend on in a `DataSpec` (saved as DIR/run_info.json, so that
tools like export rebuild the model without the data) and serves batches:

  train_batch(step)  host-local numpy batch of training step `step`
  eval_batches()     this process's share of every evaluation batch, with 'mask' (0 on padding)

Pipelines whose task is evaluated by decoding (spec.generation_metric) also give `references()`, the
reference texts in evaluation order, and `detokenize(ids)`.
"""
import dataclasses
import json
from typing import Dict, Iterator, List, Protocol, Tuple

import numpy as np
from etils import epath

TASKS = ('image_classification', 'seq2seq')
GENERATION_METRICS = ('', 'bleu', 'glue/<task>')
Batch = Dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class DataSpec:
  task: str                               # one of TASKS
  input_shapes: Dict[str, Tuple[int, ...]]  # per example, e.g. {'image': (28, 28, 1)}
  output_size: int                        # classes, or the vocabulary size
  steps_per_epoch: int
  generation_metric: str = ''             # decoded evaluation: '' (none), 'bleu', 'glue/cola', 'glue/sst2'...

  def __post_init__(self):
    if self.task not in TASKS:
      raise ValueError(f'Unknown task {self.task!r}; one of {TASKS}.')
    metric = 'glue/<task>' if self.generation_metric.startswith('glue/') else self.generation_metric
    if metric not in GENERATION_METRICS:
      raise ValueError(f'Unknown generation metric {self.generation_metric!r}; one of {GENERATION_METRICS}.')

  def to_json(self) -> str:
    """What DIR/run_info.json holds."""
    return json.dumps(dataclasses.asdict(self))

  @classmethod
  def load(cls, workdir: epath.PathLike) -> 'DataSpec':
    info = json.loads((epath.Path(workdir) / 'run_info.json').read_text())
    info['input_shapes'] = {k: tuple(v) for k, v in info['input_shapes'].items()}
    return cls(**info)


class Pipeline(Protocol):
  spec: DataSpec

  def train_batch(self, step: int) -> Batch:
    ...

  def eval_batches(self) -> Iterator[Batch]:
    ...


class DecodingPipeline(Pipeline, Protocol):
  def references(self) -> List[str]:
    ...

  def detokenize(self, ids: np.ndarray) -> str:
    ...
