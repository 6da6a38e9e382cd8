"""Reading prepared tfds datasets, never downloading them (a dataset that is not prepared fails at once).

Training input is step-addressable: the examples of step s are a function of (seed, s, process), as for the
in-memory datasets, so a resumed or preempted run sees exactly the data that an uninterrupted run would have
seen. Records come from `tfds.data_source` (random access, which needs a dataset prepared as ArrayRecord);
grain shuffles them with a new permutation every epoch without materialising it, and gives every example a
seed of its own, drawn from its position in the endless stream. Evaluation reads this process's share of a
split in order (`eval_dataset`).
"""
from typing import Any, Dict, List

import grain
import jax
import numpy as np
import tensorflow_datasets as tfds


_NOT_FOUND = (AssertionError, tfds.core.registered.DatasetNotFoundError, FileNotFoundError)


def _not_prepared(name: str, split: str, data_dir) -> FileNotFoundError:
  return FileNotFoundError(f'tfds dataset {name} (split {split}) is not prepared under data_dir {data_dir!r}; '
                           'prepare it first (see the tfds catalog; ImageNet needs a manual download). No '
                           'download is attempted.')


def eval_dataset(builder, name: str, split: str, decoders=None):
  """This process's share of a prepared split, in order, as a tf.data.Dataset."""
  try:
    return builder.as_dataset(split=tfds.split_for_jax_process(split, drop_remainder=False), decoders=decoders,
                              read_config=tfds.ReadConfig(skip_prefetch=True))
  except _NOT_FOUND:
    raise _not_prepared(name, split, builder.data_dir) from None


def data_source(name: str, split: str, data_dir, decoders=None):
  """Random access to a prepared tfds split; one clear error when it is not prepared, or not as ArrayRecord."""
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir or None, decoders=decoders, download=False)
  except _NOT_FOUND:
    raise _not_prepared(name, split, data_dir) from None
  except (NotImplementedError, ValueError, KeyError) as e:  # KeyError: tfds's "splits is empty"
    if not tfds.builder(name, data_dir=data_dir or None).is_prepared():
      raise _not_prepared(name, split, data_dir) from None
    raise ValueError(
        f'tfds dataset {name} under data_dir {data_dir!r} is prepared in a format without random access, which '
        f'step-addressable (exactly resumable) training input needs. Convert it once with `tfds convert_format '
        f'--dataset_dir=DATA_DIR/{name} --out_file_format=array_record`, or prepare it with `tfds build {name} '
        f'--file_format=array_record`. ({type(e).__name__})') from None


def _with_seed(example: Dict[str, Any], rng: np.random.Generator) -> Dict[str, Any]:
  return dict(example, seed=rng.integers(0, 2**31 - 1, size=2, dtype=np.int64))


class StepIndexed:
  """examples(step): this process's examples of training step `step`, each with its 'seed' (int64[2])."""

  def __init__(self, source, global_batch: int, seed: int):
    if global_batch % jax.process_count():
      raise ValueError(f'batch_size {global_batch} must be divisible by the {jax.process_count()} processes.')
    self.global_batch = global_batch
    self.local_batch = global_batch // jax.process_count()
    self._stream = grain.MapDataset.source(source).shuffle(seed=seed).repeat().random_map(_with_seed, seed=seed)

  def examples(self, step: int) -> List[Dict[str, Any]]:
    start = step * self.global_batch + jax.process_index() * self.local_batch
    return [self._stream[i] for i in range(start, start + self.local_batch)]
