"""The language path: vocabularies, span corruption, the Shakespeare corpus, T5, and training end to end."""
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgf_sparsity import config_lib
from pgf_sparsity import models
from pgf_sparsity.data import shakespeare
from pgf_sparsity.data import span_corruption
from pgf_sparsity.data import vocab as vocab_lib
from pgf_sparsity.formats import exporting
from pgf_sparsity.formats import model_files
from pgf_sparsity.sparsity import nm
from pgf_sparsity.training import metric_writers
from pgf_sparsity.training import train

sys.path.insert(0, os.path.dirname(__file__))
from helpers import build_experiment, load_config, mock_tfds  # noqa: E402


@pytest.mark.parametrize('length', [10, 20, 64, 128, 513])
@pytest.mark.parametrize('seed', [0, 1, 2])
def test_span_corruption_exact_density_and_recoverable(length, seed):
  vocab = vocab_lib.ByteVocabulary()
  tokens = np.random.RandomState(seed).randint(3, 259, length).astype(np.int32)
  inputs, targets = span_corruption.corrupt(tokens, vocab, np.random.default_rng(seed))
  noise = int(round(0.15 * length))
  spans = max(int(round(noise / 3.0)), 1)
  sentinels = lambda x: int(np.sum(x >= vocab.size - vocab.num_sentinels))
  assert sentinels(inputs) == sentinels(targets) == spans
  assert len(targets) == noise + spans + 1 and len(inputs) == length - noise + spans + 1
  assert inputs[-1] == vocab_lib.EOS and targets[-1] == vocab_lib.EOS
  np.testing.assert_array_equal(span_corruption.uncorrupt(inputs, targets, vocab), tokens)
  mask = span_corruption.noise_mask(length, np.random.default_rng(seed))
  assert mask.sum() == noise and not mask[0]  # starts with non-noise


def _corrupt_token_by_token(tokens, vocab, mask):
  """The span-corruption definition, one token at a time: the independent reference."""
  inputs, targets, span = [], [], -1
  for i, token in enumerate(tokens):
    if not mask[i]:
      inputs.append(token)
      continue
    if i == 0 or not mask[i - 1]:
      span += 1
      inputs.append(vocab.sentinel(span))
      targets.append(vocab.sentinel(span))
    targets.append(token)
  return inputs + [vocab_lib.EOS], targets + [vocab_lib.EOS]


@pytest.mark.parametrize('length', [2, 7, 64, 568])
def test_vectorised_span_corruption_matches_the_token_by_token_definition(length):
  vocab = vocab_lib.ByteVocabulary()
  for seed in range(5):
    tokens = np.random.RandomState(seed).randint(3, 259, length).astype(np.int32)
    inputs, targets = span_corruption.corrupt(tokens, vocab, np.random.default_rng(seed), 0.3, 2.0)
    mask = span_corruption.noise_mask(length, np.random.default_rng(seed), 0.3, 2.0)
    expected_inputs, expected_targets = _corrupt_token_by_token(tokens, vocab, mask)
    np.testing.assert_array_equal(inputs, expected_inputs)
    np.testing.assert_array_equal(targets, expected_targets)
    assert (len(inputs), len(targets)) == span_corruption.corrupted_lengths(length, 0.3, 2.0)


@pytest.mark.parametrize('rows,length', [(2, 7), (5, 64), (16, 568)])
def test_span_corruption_of_a_batch_of_rows_matches_the_definition_row_by_row(rows, length):
  """The multi-row path that C4 and Shakespeare batches take: each row against the token-by-token definition
  on that row's own noise mask (span numbering restarts in every row)."""
  vocab = vocab_lib.ByteVocabulary()
  for seed in range(3):
    tokens = np.random.RandomState(seed).randint(3, 259, (rows, length)).astype(np.int32)
    inputs, targets = span_corruption.corrupt_rows(tokens, vocab, np.random.default_rng(seed), 0.3, 2.0)
    masks = span_corruption.noise_masks(rows, length, np.random.default_rng(seed), 0.3, 2.0)
    assert length < 64 or len({tuple(m) for m in masks}) == rows  # the rows' masks differ
    for row in range(rows):
      expected_inputs, expected_targets = _corrupt_token_by_token(tokens[row], vocab, masks[row])
      np.testing.assert_array_equal(inputs[row], expected_inputs)
      np.testing.assert_array_equal(targets[row], expected_targets)


def test_span_lengths_are_uniform_over_compositions():
  # a uniform composition of 10 into 3 positive parts has first part j with probability C(9-j, 1) / C(9, 2)
  parts = span_corruption._random_partitions(np.random.default_rng(0), 10, 3, 40_000)
  assert (parts.sum(axis=1) == 10).all() and (parts >= 1).all()
  frequencies = np.bincount(parts[:, 0], minlength=9)[1:9] / len(parts)
  np.testing.assert_allclose(frequencies, [(9 - j) / 36 for j in range(1, 9)], atol=0.006)


def test_raw_length_gives_t5s_published_lengths():
  # T5 pretraining: 568 raw tokens -> 512 inputs and 114 targets (random_spans_helper)
  assert span_corruption.raw_length(512) == 568
  assert span_corruption.corrupted_lengths(568) == (512, 114)
  assert span_corruption.corrupted_lengths(span_corruption.raw_length(64))[0] <= 64
  assert span_corruption.corrupted_lengths(span_corruption.raw_length(64) + 1)[0] > 64
  pieces = span_corruption.concat_then_split([np.arange(5), np.arange(10, 13), np.arange(20, 27)], 4)
  assert [p.tolist() for p in pieces] == [[0, 1, 2, 3], [4, 10, 11, 12], [20, 21, 22, 23], [24, 25, 26]]


def test_byte_vocabulary_round_trip_and_sentinels():
  vocab = vocab_lib.ByteVocabulary()
  text = 'Ay, marry — ’tis so.'
  ids = vocab.encode(text)
  assert vocab.decode(ids + [vocab_lib.EOS, 77]) == text
  assert min(ids) >= 3 and max(ids) < 259 <= vocab.sentinel(vocab.num_sentinels - 1)
  assert vocab.sentinel(0) == vocab.size - 1
  with pytest.raises(ValueError, match='sentinel'):
    vocab.sentinel(vocab.num_sentinels)


def test_sentencepiece_vocabulary_trained_on_the_training_plays(tmp_path):
  # The first 16 works (14 training plays, held out: the first two of the full corpus's held-out plays): the
  # full corpus took most of this test's time to train on, which is not what the test is about.
  (tmp_path / 'shakespeare' / 'texts').mkdir(parents=True)
  for text in shakespeare.find_texts()[:2 * shakespeare.HELD_OUT_EVERY]:
    (tmp_path / 'shakespeare' / 'texts' / os.path.basename(text)).symlink_to(text)
  assert not set(shakespeare.load_split('train', str(tmp_path))) & set(shakespeare.load_split('validation'))
  path = shakespeare.sentencepiece_model(500, str(tmp_path))
  assert shakespeare.sentencepiece_model(500, str(tmp_path)) == path  # trained once, then read
  vocab = vocab_lib.build({'kind': 'sentencepiece', 'model_path': path})
  assert vocab.size == 500 + 100 and vocab.sentinel(0) == 599
  held_out = shakespeare.load_split('validation')[0][:20_000].strip()
  assert vocab.decode(vocab.encode(held_out)) == held_out
  assert len(vocab.encode(held_out)) < len(held_out) / 2  # pieces longer than bytes on unseen plays
  with pytest.raises(ValueError, match='model_path'):
    vocab_lib.build(config_lib.complete_block('dataset.vocab', {'kind': 'sentencepiece'}, 'shakespeare'))
  # A run on the SentencePiece corpus learns: held-out loss falls.
  config = load_config('t5_shakespeare', 'recipe=static,ff=1:4,steps=30,vocab=sentencepiece')
  config.model.update(TINY_T5)
  config.dataset.update(chunk_length=64, eval_examples=64, data_dir=str(tmp_path))
  config.dataset.vocab.size = 500
  config.batch_size, config.eval_batch_size = 16, 64
  config.eval_every_steps, config.log_every_steps = 10, 10
  train.train_and_evaluate(config, str(tmp_path / 'run'))
  evals = [r for r in metric_writers.read_jsonl(str(tmp_path / 'run')) if r['split'] == 'eval']
  assert evals[-1]['loss'] < evals[0]['loss'] - 0.3, evals


def test_shakespeare_held_out_split_is_by_play():
  files = shakespeare.split_files(shakespeare.find_texts())
  assert len(files['validation']) >= 4 and not set(files['train']) & set(files['validation'])
  assert len(files['train']) + len(files['validation']) == len(shakespeare.find_texts())


def test_t5_base_parameter_count_matches_published():
  model = models.build({'name': 't5', 'variant': 'base', 'vocab_size': 32128}, 384)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.ones((1, 4), jnp.int32),
                                             jnp.ones((1, 4), jnp.int32)))
  assert sum(x.size for x in jax.tree.leaves(shapes['params'])) == 247_577_856  # T5 v1.1 base, ~248M


def test_t5_shapes_causality_and_padding():
  model = models.build({'name': 't5', 'variant': 'tiny', 'vocab_size': 384}, 384)
  rng = np.random.RandomState(0)
  enc = jnp.asarray(rng.randint(3, 300, (2, 10)), jnp.int32)
  dec = jnp.asarray(rng.randint(3, 300, (2, 7)), jnp.int32)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), enc, dec)
  apply = jax.jit(model.apply)  # one program, rather than one per operation
  logits = apply(params, enc, dec)
  assert logits.shape == (2, 7, 384)
  changed = apply(params, enc, dec.at[:, 4].set(5))
  np.testing.assert_allclose(changed[:, :4], logits[:, :4], rtol=1e-5, atol=1e-5)  # the future is invisible
  assert not np.allclose(changed[:, 4:], logits[:, 4:])
  padded = apply(params, jnp.pad(enc, ((0, 0), (0, 5))), dec)  # padding the encoder changes nothing
  np.testing.assert_allclose(padded, logits, rtol=1e-4, atol=1e-4)
  tied = models.build({'name': 't5', 'variant': 'tiny', 'vocab_size': 384, 'tie_embeddings': True}, 384)
  tied_params = jax.jit(tied.init)(jax.random.PRNGKey(0), enc, dec)['params']
  assert 'lm_head' not in tied_params and jax.jit(tied.apply)({'params': tied_params}, enc, dec).shape == (2, 7, 384)


TINY_T5 = dict(variant=None, d_model=64, d_ff=128, num_heads=2, head_dim=32, encoder_layers=1, decoder_layers=1)
RECIPES = ['dense', 'static', 'srste,flow=ste', 'mdgf_linear', 'mdgf_exponential', 'sdgf_stepwise',
           'sdgf_geometric']


@pytest.mark.parametrize('recipe', RECIPES)
def test_every_recipe_improves_validation_loss_and_ends_exactly_n_m(recipe, tmp_path):
  qkv = (1, 4) if recipe.startswith('sdgf') else (2, 4)  # SDGF targets need the same number of frames
  config = load_config('t5_shakespeare', f'recipe={recipe},ff=1:4,qkv={qkv[0]}:{qkv[1]},steps=90')
  config.model.update(TINY_T5)
  config.dataset.update(chunk_length=64, eval_examples=64)
  config.batch_size, config.eval_batch_size = 16, 64
  config.eval_every_steps, config.log_every_steps = 30, 30
  state, _ = train.train_and_evaluate(config, str(tmp_path))
  evals = [r for r in metric_writers.read_jsonl(str(tmp_path)) if r['split'] == 'eval']
  assert [r['step'] for r in evals] == [30, 60, 90]
  assert evals[-1]['loss'] < evals[0]['loss'], evals
  assert evals[-1]['perplexity'] == pytest.approx(np.exp(evals[-1]['loss']), rel=1e-4)
  if recipe == 'dense':
    return
  del state
  exporting.export(str(tmp_path), str(tmp_path / 'model.npz'))  # the shipped model: the final weights, N:M
  flat, meta = model_files.read(str(tmp_path / 'model.npz'))
  ff = [p for p in flat if '/mlp/' in p]
  qkv_paths = [p for p in flat if p.endswith(('query/kernel', 'key/kernel', 'value/kernel'))]
  assert len(ff) == 6 and len(qkv_paths) == 9
  for paths, (n, m) in ((ff, (1, 4)), (qkv_paths, qkv)):
    for p in paths:
      assert (meta['layers'][p]['n'], meta['layers'][p]['m']) == (n, m), p
      assert (np.asarray(nm.group_counts(flat[p] != 0, m)) == n).all(), p  # counted on the file's weights


def test_encoder_and_decoder_patterns_can_differ():
  config = load_config('t5_shakespeare', 'ff=1:8,dec_ff=1:4,qkv=2:4,dec_qkv=none')
  config.model.update(TINY_T5)
  exp, _ = build_experiment(config)
  patterns = {p: (t.n, t.m) for p, (t, _) in exp.recipe.kernels.items()}
  assert patterns['encoder_layers_0/mlp/wi_0/kernel'] == (1, 8)
  assert patterns['decoder_layers_0/mlp/wo/kernel'] == (1, 4)
  assert patterns['encoder_layers_0/attention/query/kernel'] == (2, 4)
  assert not any(p.startswith('decoder') and 'attention' in p for p in patterns)  # decoder Q/K/V dense


def test_paper_t5_configs_use_t5x_loss_and_bad_values_are_refused(tmp_path):
  config = load_config('t5_c4')
  assert config.z_loss == 1e-4 and config.loss_normalizer == 'padded'
  config = load_config('t5_shakespeare', 'runlocal')
  config.loss_normalizer = 'per_example'
  with pytest.raises(ValueError, match='loss_normalizer must be one of'):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


@pytest.mark.parametrize('z_loss,normalizer', [(0.0, 'tokens'), (1e-4, 'padded'), (0.5, 'tokens')])
def test_loss_z_loss_and_normalizer_match_hand_computation(z_loss, normalizer):
  import ml_collections  # pylint: disable=g-import-not-at-top
  from pgf_sparsity import tasks  # pylint: disable=g-import-not-at-top
  logits = np.random.default_rng(0).normal(size=(2, 3, 5)).astype(np.float32) * 3
  targets = np.array([[1, 2, 0], [3, 0, 0]], np.int32)  # 0 is padding: 3 real tokens of 6 positions
  config = ml_collections.ConfigDict(dict(label_smoothing=0.0, z_loss=z_loss, loss_normalizer=normalizer))
  loss, metrics = tasks.Seq2Seq(config, 5).train_loss(lambda *args, **kwargs: jnp.asarray(logits), None,
                                                      {'inputs': targets, 'targets': targets}, None)
  lse = np.log(np.exp(logits.astype(np.float64)).sum(-1))
  per_token = lse - np.take_along_axis(logits, targets[..., None], -1)[..., 0] + z_loss * lse ** 2
  real = targets > 0
  expected = per_token[real].sum() / (3.0 if normalizer == 'tokens' else 6.0)
  assert float(loss) == pytest.approx(expected, rel=1e-5)
  assert ('z_loss' in metrics) == (z_loss > 0)


def test_position_bias_table_is_initialised_as_t5x():
  from pgf_sparsity.models import t5  # pylint: disable=g-import-not-at-top
  bias = t5.RelativePositionBias(num_heads=64, bidirectional=True)
  table = np.asarray(bias.init(jax.random.PRNGKey(0), 4, 4)['params']['rel_embedding'])
  assert table.shape == (64, 32)
  assert table.std() == pytest.approx(1 / np.sqrt(32), rel=0.08)  # variance scaling on 32 buckets, not normal(1)


def test_packing_keeps_examples_whole_in_order_and_numbered():
  from pgf_sparsity.data import sequence_packing  # pylint: disable=g-import-not-at-top
  pairs = [(np.full(n_in, i + 2), np.full(n_out, i + 2)) for i, (n_in, n_out) in
           enumerate([(5, 2), (4, 3), (6, 1), (3, 4), (9, 2), (2, 2)])]
  out = sequence_packing.pack(pairs, rows=2, inputs_length=10, targets_length=5)
  # Row 0: examples 0 and 1 (5 + 4 inputs, 2 + 3 targets); row 1: examples 2 and 3 (6 + 3, 1 + 4); examples
  # 4 (9 inputs) and 5 (2 inputs) fit no row any more and are left out.
  np.testing.assert_array_equal(out['inputs'][0], [2] * 5 + [3] * 4 + [0])
  np.testing.assert_array_equal(out['inputs_segment_ids'][0], [1] * 5 + [2] * 4 + [0])
  np.testing.assert_array_equal(out['targets'][0], [2, 2, 3, 3, 3])
  np.testing.assert_array_equal(out['targets_segment_ids'][0], [1, 1, 2, 2, 2])
  np.testing.assert_array_equal(out['inputs'][1], [4] * 6 + [5] * 3 + [0])
  np.testing.assert_array_equal(out['targets_segment_ids'][1], [1, 2, 2, 2, 2])
  assert not (out['inputs'] == 6).any() and not (out['inputs'] == 7).any()


def test_packed_glue_batches_carry_segment_ids():
  from pgf_sparsity.data import tfds_text  # pylint: disable=g-import-not-at-top
  config = {'tfds_name': 'glue/sst2', 'inputs_length': 256, 'targets_length': 32, 'num_eval_examples': 4,
            'pack_factor': 3}
  with mock_tfds(num_examples=24):
    data = tfds_text.TfdsText(config_lib.complete_block('dataset', config, 'tfds_text'), 4, 4, 0)
    batch = data.train_batch(0)
  assert batch['inputs'].shape == (4, 256) and batch['targets_segment_ids'].shape == (4, 32)
  assert batch['inputs_segment_ids'].max() >= 2  # several examples in a row
  assert ((batch['inputs'] > 0) == (batch['inputs_segment_ids'] > 0)).all()
  assert data.spec.steps_per_epoch == 24 // 12
