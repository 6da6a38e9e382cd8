r"""PGF in an Equinox model built from eqx.nn layers (Equinox is an optional dependency:
`pip install equinox`), on sklearn's digits, each image row a token. Equinox weights are (out, in), as in
PyTorch, so the targets say `layout: 'out_in'`. The lines marked `# PGF` are all that the method adds.

  .venv/bin/python examples/equinox_digits.py                    # SR-STE 2:4
  .venv/bin/python examples/equinox_digits.py --recipe=mdgf_exponential --pattern=1:8
"""
import functools
import os
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  pylint: disable=wrong-import-position
from pgf_sparsity.sparsity import Recipe, tree_paths  # noqa: E402  pylint: disable=wrong-import-position

# Paths of the model's array leaves: attribute names and list indices joined by '/'.
TARGETS = {'mlp': {'regex': r'mlp/layers/[02]/weight', 'layout': 'out_in'},
           'attention': {'regex': r'attention/(query|key|value|output)_proj/weight', 'layout': 'out_in'}}


class Classifier(eqx.Module):
  embed: eqx.nn.Linear
  attention: eqx.nn.MultiheadAttention
  mlp: eqx.nn.Sequential
  head: eqx.nn.Linear

  def __init__(self, key, width: int = 64):
    keys = jax.random.split(key, 5)
    self.embed = eqx.nn.Linear(8, width, key=keys[0])
    self.attention = eqx.nn.MultiheadAttention(num_heads=4, query_size=width, key=keys[1])
    self.mlp = eqx.nn.Sequential([eqx.nn.Linear(width, 4 * width, key=keys[2]), eqx.nn.Lambda(jax.nn.gelu),
                                  eqx.nn.Linear(4 * width, width, key=keys[3])])
    self.head = eqx.nn.Linear(width, 10, key=keys[4])

  def __call__(self, image):  # one image (8, 8): 8 tokens of 8 pixels
    h = jax.vmap(self.embed)(image)
    h = h + self.attention(h, h, h)
    h = h + jax.vmap(self.mlp)(h)
    return self.head(h.mean(axis=0))


def loss_of(model, images, labels):
  logits = jax.vmap(model)(images)
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def train_step(static, sp, tx, plan, params, opt_state, step, images, labels):
  masks, beta = sp.masks(params, plan), sp.beta(step, plan)  # PGF
  loss_fn = lambda p: loss_of(eqx.combine(sp.apply(p, masks, beta), static), images, labels)  # PGF: sp.apply
  loss, grads = jax.value_and_grad(loss_fn)(params)
  updates, opt_state = tx.update(grads, opt_state, params, nm_masks=masks, nm_beta=beta)  # PGF: nm_* arguments
  return eqx.apply_updates(params, updates), opt_state, loss


def main(argv=None):
  args = common.parse_args(argv, recipe='srste', flow='ste', pattern='2:4')
  x_train, y_train, x_test, y_test = common.load_digits(args.data)
  params, static = eqx.partition(Classifier(jax.random.PRNGKey(0)), eqx.is_array)
  sp = Recipe.from_config(common.recipe_block(args, TARGETS)).bind(params, args.steps)  # PGF
  tx = optax.chain(sp.transform(), optax.adamw(args.learning_rate))  # PGF: sp.transform() first
  step_fn = jax.jit(functools.partial(train_step, static, sp, tx), static_argnums=0)
  params, losses, stop = common.fit(args, sp, step_fn, params, tx.init(params), x_train, y_train)
  final = sp.apply(params, sp.masks(params, sp.final_plan()), 0.0)  # PGF: the exactly N:M weights
  logits = jax.vmap(eqx.combine(final, static))(x_test)
  accuracy = float(jnp.mean(jnp.argmax(logits, -1) == y_test))
  print(f'test accuracy of the N:M model: {accuracy:.4f}')
  return {'losses': losses, 'accuracy': accuracy, 'step': stop,
          'weights': {path: np.asarray(w) for path, w in tree_paths.flatten(final).items()}}


if __name__ == '__main__':
  main()
