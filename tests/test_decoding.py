"""Beam search with T5's length penalty: exhaustive search on a tiny vocabulary, and beam 1 = greedy."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np

from pgf_sparsity.tasks import decoding

from pgf_sparsity import tasks
from pgf_sparsity.data.vocab import EOS
from pgf_sparsity.models import t5

VOCAB, LENGTH = 4, 3


def _model_and_params(seed: int):
  model = t5.T5(vocab_size=VOCAB, d_model=16, d_ff=32, num_heads=2, head_dim=8, encoder_layers=1,
                decoder_layers=2)
  inputs = jnp.asarray(np.random.default_rng(seed).integers(1, VOCAB, (2, 5)))
  params = jax.jit(model.init)(jax.random.PRNGKey(seed), inputs, inputs[:, :LENGTH])['params']
  params = jax.tree.map(lambda p: p * 2.0, params)
  apply_fn = lambda p, *args, variables=None, **kwargs: model.apply({'params': p, **(variables or {})}, *args,
                                                                    **kwargs)
  return model, params, inputs, apply_fn


def _best_by_enumeration(model, params, inputs, alpha):
  """Every hypothesis: ended by EOS at some length, or LENGTH tokens without EOS; the best penalised score."""
  hypotheses = []
  for length in range(1, LENGTH + 1):
    for body in itertools.product([t for t in range(VOCAB) if t != EOS], repeat=length - 1):
      for end in [(EOS,)] + ([(t,) for t in range(VOCAB) if t != EOS] if length == LENGTH else []):
        hypotheses.append((length, body + end + (0,) * (LENGTH - length)))
  tokens = jnp.asarray([h for _, h in hypotheses])
  best = []
  apply = jax.jit(model.apply)  # one program for every row, rather than one per operation
  for row in range(inputs.shape[0]):  # every hypothesis scored in one call
    logits = apply({'params': params}, jnp.repeat(inputs[row:row + 1], len(hypotheses), axis=0),
                   tasks.shift_right(tokens))
    token_logp = jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[..., None], axis=-1)[..., 0]
    scored = [(float(token_logp[i, :length].sum()) / ((5 + length) / 6) ** alpha, hypothesis)  # T5 / GNMT
              for i, (length, hypothesis) in enumerate(hypotheses)]
    best.append(max(scored)[1])
  return np.array(best)


def test_beam_search_finds_the_best_hypothesis_when_the_beam_holds_them_all():
  # Seed 4: the best hypothesis is EOS at once without a length penalty, three tokens with alpha 3.
  for seed, alpha in ((0, 0.6), (4, 0.0), (4, 3.0)):
    model, params, inputs, apply_fn = _model_and_params(seed)
    beams = VOCAB ** (LENGTH - 1)  # every prefix fits: the search is exhaustive
    found = decoding.beam_search(apply_fn, params, inputs, LENGTH, model.empty_cache(2 * beams, LENGTH), beams,
                                 alpha)
    np.testing.assert_array_equal(np.asarray(found), _best_by_enumeration(model, params, inputs, alpha))


def test_one_beam_is_greedy_up_to_eos():
  model, params, inputs, apply_fn = _model_and_params(3)
  greedy = np.asarray(decoding.greedy(apply_fn, params, inputs, LENGTH, model.empty_cache(2, LENGTH)))
  beam = np.asarray(decoding.beam_search(apply_fn, params, inputs, LENGTH, model.empty_cache(2, LENGTH), 1))
  for g, b in zip(greedy, beam):
    end = list(g).index(EOS) + 1 if EOS in g else LENGTH
    np.testing.assert_array_equal(b[:end], g[:end])
    assert not b[end:].any()
