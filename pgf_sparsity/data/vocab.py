"""Vocabularies for the text tasks. Id 0 is padding (and T5's decoder start), 1 is end of sequence.

ByteVocabulary (ByT5-style, the offline default): 2 is unknown, UTF-8 bytes are 3..258, and the last
`num_sentinels` ids of the 384 are span-corruption sentinels, counting down from the top (as T5's extra ids).
SentencePieceVocabulary: a SentencePiece model file (e.g. T5's) plus `num_sentinels` extra ids above it.
"""
from typing import List, Sequence

PAD, EOS = 0, 1


class ByteVocabulary:
  num_bytes_offset = 3

  def __init__(self, num_sentinels: int = 125):
    self.num_sentinels = num_sentinels
    self.size = self.num_bytes_offset + 256 + num_sentinels

  def encode(self, text: str) -> List[int]:
    return [b + self.num_bytes_offset for b in text.encode('utf-8')]

  def decode(self, ids: Sequence[int]) -> str:
    ids = list(ids)
    if EOS in ids:
      ids = ids[:ids.index(EOS)]
    data = bytes(i - self.num_bytes_offset for i in ids if self.num_bytes_offset <= i < self.num_bytes_offset + 256)
    return data.decode('utf-8', errors='replace')

  def sentinel(self, k: int) -> int:
    if not 0 <= k < self.num_sentinels:
      raise ValueError(f'sentinel {k} out of range (0..{self.num_sentinels - 1})')
    return self.size - 1 - k


class SentencePieceVocabulary:

  def __init__(self, model_path: str, num_sentinels: int = 100):
    import sentencepiece  # pylint: disable=g-import-not-at-top
    self.processor = sentencepiece.SentencePieceProcessor(model_file=model_path)
    if self.processor.pad_id() not in (PAD, -1) or self.processor.eos_id() != EOS:
      raise ValueError(f'{model_path}: this code expects pad id 0 and eos id 1 (T5 convention), got pad '
                       f'{self.processor.pad_id()} and eos {self.processor.eos_id()}.')
    self.num_sentinels = num_sentinels
    self.size = self.processor.get_piece_size() + num_sentinels

  def encode(self, text: str) -> List[int]:
    return list(self.processor.encode(text))

  def decode(self, ids: Sequence[int]) -> str:
    ids = list(ids)
    if EOS in ids:
      ids = ids[:ids.index(EOS)]
    return self.processor.decode([i for i in ids if 0 < i < self.processor.get_piece_size()])

  def sentinel(self, k: int) -> int:
    if not 0 <= k < self.num_sentinels:
      raise ValueError(f'sentinel {k} out of range (0..{self.num_sentinels - 1})')
    return self.size - 1 - k


def build(config):
  """The vocabulary of a dataset's vocab block: kind 'byte', or 'sentencepiece' with a model_path."""
  kind = config['kind']
  if kind == 'byte':
    return ByteVocabulary()
  if kind == 'sentencepiece':
    if not config['model_path']:
      raise ValueError('vocab.kind=sentencepiece needs vocab.model_path (a SentencePiece .model file).')
    return SentencePieceVocabulary(config['model_path'])
  raise ValueError(f"vocab.kind must be 'byte' or 'sentencepiece', got {kind!r}.")
