r"""PGF in a Flax linen model through this package's sparse layers: `SparseDense` is nn.Dense whose kernel
the 'sparsity' variable collection masks (the path the package's own ViT, SwinV2 and T5 take). The lines
marked `# PGF` are all that the method adds; the model swaps nn.Dense for SparseDense where it wants N:M.

  .venv/bin/python examples/linen_digits.py                      # MDGF-Exponential 1:8
"""
import functools
import os
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  pylint: disable=wrong-import-position
from pgf_sparsity.sparsity import Recipe, SparseDense, tree_paths  # noqa: E402  pylint: disable=wrong-import-position

TARGETS = {'hidden': {'regex': r'(hidden_1|hidden_2)/kernel'}}


class Classifier(nn.Module):
  hidden: int = 256

  @nn.compact
  def __call__(self, images):
    h = images.reshape(images.shape[0], -1)
    h = nn.relu(SparseDense(self.hidden, name='hidden_1')(h))  # PGF: SparseDense for nn.Dense
    h = nn.relu(SparseDense(self.hidden, name='hidden_2')(h))  # PGF
    return nn.Dense(10, name='head')(h)


def train_step(model, sp, tx, plan, params, opt_state, step, images, labels):
  masks, beta = sp.masks(params, plan), sp.beta(step, plan)  # PGF
  variables = lambda p: {'params': p, 'sparsity': sp.collection(masks, beta)}  # PGF: the 'sparsity' collection
  loss_fn = lambda p: optax.softmax_cross_entropy_with_integer_labels(
      model.apply(variables(p), images), labels).mean()
  loss, grads = jax.value_and_grad(loss_fn)(params)
  updates, opt_state = tx.update(grads, opt_state, params, nm_masks=masks, nm_beta=beta)  # PGF: nm_* arguments
  return optax.apply_updates(params, updates), opt_state, loss


def main(argv=None):
  args = common.parse_args(argv)
  x_train, y_train, x_test, y_test = common.load_digits(args.data)
  model = Classifier()
  params = model.init(jax.random.PRNGKey(0), x_train[:1])['params']
  sp = Recipe.from_config(common.recipe_block(args, TARGETS)).bind(params, args.steps)  # PGF
  sp.check_layers(model.apply, params, x_train[:1])  # PGF: every target is a SparseDense kernel
  tx = optax.chain(sp.transform(), optax.adamw(args.learning_rate))  # PGF: sp.transform() first
  step_fn = jax.jit(functools.partial(train_step, model, sp, tx), static_argnums=0)
  params, losses, stop = common.fit(args, sp, step_fn, params, tx.init(params), x_train, y_train)
  final = sp.apply(params, sp.masks(params, sp.final_plan()), 0.0)  # PGF: the exactly N:M weights
  accuracy = float(jnp.mean(jnp.argmax(model.apply({'params': final}, x_test), -1) == y_test))
  print(f'test accuracy of the N:M model: {accuracy:.4f}')
  return {'losses': losses, 'accuracy': accuracy, 'step': stop,
          'weights': {path: np.asarray(w) for path, w in tree_paths.flatten(final).items()}}


if __name__ == '__main__':
  main()
