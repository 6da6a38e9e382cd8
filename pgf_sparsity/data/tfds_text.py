"""tfds text tasks for the encoder-decoder, for users who have the data (never downloaded here):

  c4/en                   span corruption of the 'text' feature (pretraining), as T5X: each step's documents
                          concatenated, split into raw pieces whose corrupted inputs fill `inputs_length`
                          (568 tokens -> 512 inputs, 114 targets), and packed with segment ids
  glue/<task>             text to text: "<task> name: value ..." -> the label's name; exact match
  wmt14_translate/de-en   "translate English to German: ..." -> German (dataset.source_language and
                          target_language; the tfds name's order by default); BLEU

Tokens come from the configured vocabulary (bytes by default, or a SentencePiece model). Training is
step-addressable (tfds_access.py: the batch of step s is a function of seed, s and process, so resumption
is exact); every process evaluates the same number of padded batches.
"""
import math
from typing import Any, Dict, List, Mapping

import jax
import numpy as np
import tensorflow_datasets as tfds

from pgf_sparsity.data import sequence_packing
from pgf_sparsity.data import span_corruption
from pgf_sparsity.data import tfds_access
from pgf_sparsity.data import vocab as vocab_lib
from pgf_sparsity.data.base import DataSpec
from pgf_sparsity.data.span_corruption import pad_to
from pgf_sparsity.data.vocab import EOS

_LANGUAGES = {'de': 'German', 'en': 'English', 'fr': 'French', 'cs': 'Czech', 'hi': 'Hindi', 'ru': 'Russian'}


def stsb_target(score: float) -> str:
  """T5's STS-B target: the 0-5 similarity rounded to the nearest 0.2, one decimal."""
  return f'{round(float(score) * 5) / 5:.1f}'


def _text(value) -> str:
  return value.decode('utf-8', errors='replace') if isinstance(value, bytes) else str(value)


class TfdsText:

  def __init__(self, config: Mapping[str, Any], global_batch: int, eval_batch: int, seed: int):
    self.name = config.tfds_name
    self.kind = self.name.split('/')[0]
    if self.kind not in ('c4', 'glue', 'wmt14_translate', 'wmt16_translate', 'wmt19_translate'):
      raise ValueError(f'dataset.tfds_name {self.name!r}: supported are c4/*, glue/* and wmt*_translate/*.')
    self.vocab = vocab_lib.build(config.vocab)
    self.builder = tfds.builder(self.name, data_dir=config.tfds_data_dir or None)
    self.train_split = config.train_split
    self.eval_split = config.eval_split
    self.eval_batch = eval_batch
    self.num_eval = int(config.num_eval_examples or 0)
    if self.kind == 'c4':
      inputs_length = int(config.inputs_length)
      self.raw_length = span_corruption.raw_length(inputs_length)
      targets_length = span_corruption.corrupted_lengths(self.raw_length)[1]
    else:
      inputs_length, targets_length = int(config.inputs_length), int(config.targets_length)
    self.lengths = {'inputs': inputs_length, 'targets': targets_length}
    metric = {'c4': '', 'glue': f'glue/{self.name.split("/")[-1]}'}.get(self.kind, 'bleu')
    train_source = tfds_access.data_source(self.name, self.train_split, config.tfds_data_dir or None)
    # dataset.pack_factor k > 1: every step reads k examples per row and packs them (sequence_packing.py); C4
    # reads dataset.documents_per_row documents per row, whose pieces are packed.
    self.pack_factor = int(config.pack_factor or 1)
    per_step = global_batch * self.pack_factor
    if self.kind == 'c4':
      per_step = math.ceil(global_batch * float(config.documents_per_row) / jax.process_count())
      per_step *= jax.process_count()
    self._train = tfds_access.StepIndexed(train_source, per_step, seed)
    self.local_batch = global_batch // jax.process_count()
    num_train = int(config.num_train_examples or len(train_source))
    self.spec = DataSpec('seq2seq', {k: (v,) for k, v in self.lengths.items()}, self.vocab.size,
                         max(num_train // per_step, 1), metric)
    if self.kind == 'wmt14_translate' or self.kind.startswith('wmt'):
      languages = self.name.split('/')[1].split('-')
      self.source = config.source_language or languages[0]
      self.target = config.target_language or languages[1]
      if {self.source, self.target} != set(languages):
        raise ValueError(f'dataset.source_language / target_language ({self.source}, {self.target}) must be '
                         f'the two languages of {self.name}.')
    self._eval_cache = None

  # ---- examples ----
  def _pair(self, example, rng):
    """(input ids, target ids, reference text) of one example (GLUE, WMT)."""
    if self.kind == 'glue':
      task = self.name.split('/')[1]
      fields = ' '.join(f'{k}: {_text(v)}' for k, v in sorted(example.items())
                        if k not in ('idx', 'label') and isinstance(v, (bytes, str)))
      source, reference = f'{task} {fields}', self._label_text(task, example['label'])
    else:
      source = (f'translate {_LANGUAGES.get(self.source, self.source)} to '
                f'{_LANGUAGES.get(self.target, self.target)}: {_text(example[self.source])}')
      reference = _text(example[self.target])
    inputs = self.vocab.encode(source)[:self.lengths['inputs'] - 1] + [EOS]
    targets = self.vocab.encode(reference)[:self.lengths['targets'] - 1] + [EOS]
    return np.asarray(inputs, np.int32), np.asarray(targets, np.int32), reference

  def _label_text(self, task: str, label) -> str:
    """The target text: the label's name, or for STS-B (a float score) T5's rounded number."""
    if task == 'stsb':
      return stsb_target(label)
    return self.builder.info.features['label'].names[int(label)] if int(label) >= 0 else 'unknown'

  def _batch(self, pairs) -> Dict[str, np.ndarray]:
    return {'inputs': pad_to([p[0] for p in pairs], self.lengths['inputs']),
            'targets': pad_to([p[1] for p in pairs], self.lengths['targets'])}

  def _pieces(self, examples, rng) -> List:
    """C4: the documents' tokens concatenated, split into raw pieces, span-corrupted (all but the last piece
    have the full length, and are corrupted together)."""
    documents = [self.vocab.encode(_text(e['text'])) for e in examples]
    pieces = span_corruption.concat_then_split(documents, self.raw_length)
    full = [p for p in pieces if len(p) == self.raw_length]
    out = list(zip(*span_corruption.corrupt_rows(np.stack(full), self.vocab, rng))) if full else []
    out += [span_corruption.corrupt(p, self.vocab, rng) for p in pieces if 2 <= len(p) < self.raw_length]
    return [(inputs, targets, '') for inputs, targets in out]

  def train_batch(self, step: int):
    examples = self._train.examples(step)
    if self.kind == 'c4':  # pieces that find no room in the step's rows are dropped (C4 is never epoch'd)
      pairs = self._pieces(examples, np.random.default_rng(examples[0]['seed']))
      return sequence_packing.pack([p[:2] for p in pairs], self.local_batch, self.lengths['inputs'],
                               self.lengths['targets'])
    pairs = [self._pair(e, np.random.default_rng(e['seed'])) for e in examples]
    if self.pack_factor > 1:
      return sequence_packing.pack([p[:2] for p in pairs], self.local_batch, self.lengths['inputs'],
                               self.lengths['targets'])
    return self._batch(pairs)

  def _eval_examples(self) -> List:
    """This process's evaluation examples, read once: evaluation, decoding and references share them."""
    if self._eval_cache is None:
      ds = tfds_access.eval_dataset(self.builder, self.name, self.eval_split)
      if self.num_eval:
        ds = ds.take(self.num_eval)
      rng = np.random.default_rng([7, jax.process_index()])
      examples = list(tfds.as_numpy(ds))
      self._eval_cache = (self._pieces(examples, rng) if self.kind == 'c4' else
                          [self._pair(e, rng) for e in examples])
    return self._eval_cache

  def eval_batches(self):
    examples = self._eval_examples()
    local = self.eval_batch // jax.process_count()
    total = self.num_eval or len(examples) * jax.process_count()
    for b in range(math.ceil(total / self.eval_batch)):
      chunk = examples[b * local:(b + 1) * local]
      mask = np.zeros(local, np.float32)
      mask[:len(chunk)] = 1.0
      filler = (np.array([EOS], np.int32), np.array([EOS], np.int32), '')
      batch = self._batch(chunk + [filler] * (local - len(chunk)))
      batch['mask'] = mask
      yield batch

  # ---- decoded evaluation (GLUE, WMT) ----
  def references(self) -> List[str]:
    return [p[2] for p in self._eval_examples()]

  def detokenize(self, ids: np.ndarray) -> str:
    return self.vocab.decode(ids)
