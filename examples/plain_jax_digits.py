r"""PGF in a plain JAX model: a function of a dict of parameters (an MLP on sklearn's flattened digits),
optax, nothing else. The lines marked `# PGF` are all that the method adds to the training script.

  .venv/bin/python examples/plain_jax_digits.py                  # SDGF-Stepwise 1:8 (7:8, 4:8, 2:8, 1:8)
  .venv/bin/python examples/plain_jax_digits.py --recipe=mdgf_linear --flow=ste
"""
import functools
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  pylint: disable=wrong-import-position
from pgf_sparsity.sparsity import Recipe  # noqa: E402  pylint: disable=wrong-import-position

TARGETS = {'hidden': {'regex': r'(w1|w2)'}}  # (in, out) matrices; the head w3 stays dense


def init(key, hidden: int = 256):
  k1, k2, k3 = jax.random.split(key, 3)
  dense = lambda k, n_in, n_out: jax.random.normal(k, (n_in, n_out)) * np.sqrt(2.0 / n_in)
  return {'w1': dense(k1, 64, hidden), 'b1': jnp.zeros(hidden), 'w2': dense(k2, hidden, hidden),
          'b2': jnp.zeros(hidden), 'w3': dense(k3, hidden, 10), 'b3': jnp.zeros(10)}


def predict(params, images):
  h = images.reshape(images.shape[0], -1)
  h = jax.nn.relu(h @ params['w1'] + params['b1'])
  h = jax.nn.relu(h @ params['w2'] + params['b2'])
  return h @ params['w3'] + params['b3']


def train_step(sp, tx, plan, params, opt_state, step, images, labels):
  masks, beta = sp.masks(params, plan), sp.beta(step, plan)  # PGF
  loss_fn = lambda p: optax.softmax_cross_entropy_with_integer_labels(
      predict(sp.apply(p, masks, beta), images), labels).mean()  # PGF: sp.apply
  loss, grads = jax.value_and_grad(loss_fn)(params)
  updates, opt_state = tx.update(grads, opt_state, params, nm_masks=masks, nm_beta=beta)  # PGF: nm_* arguments
  return optax.apply_updates(params, updates), opt_state, loss


def main(argv=None):
  args = common.parse_args(argv, recipe='sdgf_stepwise')
  x_train, y_train, x_test, y_test = common.load_digits(args.data)
  params = init(jax.random.PRNGKey(0))
  sp = Recipe.from_config(common.recipe_block(args, TARGETS)).bind(params, args.steps)  # PGF
  tx = optax.chain(sp.transform(), optax.clip_by_global_norm(1.0), optax.adamw(args.learning_rate))  # PGF
  step_fn = jax.jit(functools.partial(train_step, sp, tx), static_argnums=0)
  params, losses, stop = common.fit(args, sp, step_fn, params, tx.init(params), x_train, y_train)
  final = sp.apply(params, sp.masks(params, sp.final_plan()), 0.0)  # PGF: the exactly N:M weights
  accuracy = float(jnp.mean(jnp.argmax(predict(final, x_test), -1) == y_test))
  print(f'test accuracy of the N:M model: {accuracy:.4f}')
  return {'losses': losses, 'accuracy': accuracy, 'step': stop,
          'weights': {path: np.asarray(w) for path, w in final.items()}}


if __name__ == '__main__':
  main()
