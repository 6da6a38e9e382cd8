"""What the one training loop trains, behind one interface, as data pipelines are behind `Pipeline`.

A Task knows its batches' keys and its model's methods; the step and evaluation code knows neither:

  dummy_inputs(input_shapes)             a batch of one, for initialisation and shape analysis
  train_loss(apply_fn, params, batch, rng) -> (loss, {metric: value})
  eval_sums(apply_fn, params, batch)     -> {name: sum over the batch's real rows ('mask')}
  finalize(totals)                       -> evaluation metrics from the summed totals
  decodes                                whether evaluation also decodes text; then
  decode(apply_fn, params, batch)        -> token ids, and
  corpus_metrics(predictions, references) -> metrics of the decoded texts (over every process's examples)

`apply_fn(params, *args, **kwargs)` is the model's apply with the step's sparsity variables bound.
Modules: classification (images), seq2seq (text to text), decoding (greedy, beam search), glue_metrics
(GLUE's official metrics), augment (Mixup, CutMix, random erasing in the train step).
"""
from typing import Any, Dict, List, Mapping, Protocol, Tuple

import jax

from pgf_sparsity.tasks.classification import ImageClassification
from pgf_sparsity.tasks.seq2seq import Seq2Seq, shift_right

__all__ = ['DecodingTask', 'ImageClassification', 'Seq2Seq', 'Task', 'build', 'shift_right']


class Task(Protocol):
  decodes: bool

  def dummy_inputs(self, input_shapes: Mapping[str, Tuple[int, ...]]) -> Tuple[jax.Array, ...]:
    ...

  def train_loss(self, apply_fn, params, batch, rng) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    ...

  def eval_sums(self, apply_fn, params, batch) -> Dict[str, jax.Array]:
    ...

  def finalize(self, totals: Dict[str, float]) -> Dict[str, float]:
    ...


class DecodingTask(Task, Protocol):

  def decode(self, apply_fn, params, batch) -> jax.Array:
    ...

  def corpus_metrics(self, predictions: List[str], references: List[str]) -> Dict[str, float]:
    ...


def build(config, spec, model: Any) -> Task:
  """The task of a data spec (data.base.DataSpec) and the model built for it."""
  if spec.task == 'seq2seq':
    targets_length = spec.input_shapes['targets'][0]
    return Seq2Seq(config, spec.output_size, spec.generation_metric, targets_length,
                   getattr(model, 'empty_cache', None))
  return ImageClassification(config, spec.output_size)
