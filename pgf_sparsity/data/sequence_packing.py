"""Packing several (inputs, targets) examples into each row of a batch, as T5X packs: examples follow each
other in a row, numbered by segment ids (1, 2, ...; 0 is padding), so that the model keeps attention within
each example (models/t5.py) and every example's decoder starts from its own start token (tasks.shift_right).

Greedy and in order, which keeps a step's batch a function of its examples: an example goes into the first
row that still has room for both its inputs and its targets; one that fits no row is left out.
"""
from typing import Dict, List, Sequence, Tuple

import numpy as np

Pair = Tuple[np.ndarray, np.ndarray]


def pack(pairs: Sequence[Pair], rows: int, inputs_length: int, targets_length: int) -> Dict[str, np.ndarray]:
  """{'inputs', 'targets', 'inputs_segment_ids', 'targets_segment_ids'}, each (rows, length)."""
  out = {key: np.zeros((rows, length), np.int32) for key, length in
         (('inputs', inputs_length), ('targets', targets_length), ('inputs_segment_ids', inputs_length),
          ('targets_segment_ids', targets_length))}
  used: List[List[int]] = [[0, 0, 0] for _ in range(rows)]  # inputs filled, targets filled, segments
  for inputs, targets in pairs:
    for row, (filled_in, filled_out, segments) in enumerate(used):
      if filled_in + len(inputs) <= inputs_length and filled_out + len(targets) <= targets_length:
        segment = segments + 1
        out['inputs'][row, filled_in:filled_in + len(inputs)] = inputs
        out['inputs_segment_ids'][row, filled_in:filled_in + len(inputs)] = segment
        out['targets'][row, filled_out:filled_out + len(targets)] = targets
        out['targets_segment_ids'][row, filled_out:filled_out + len(targets)] = segment
        used[row] = [filled_in + len(inputs), filled_out + len(targets), segment]
        break
  return out
