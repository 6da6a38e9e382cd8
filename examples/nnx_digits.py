r"""PGF in a Flax NNX model written in NNX's own idiom: nnx.Linear and nnx.MultiHeadAttention on sklearn's
digits (each image row a token), trained with optax through NNX's functional API (nnx.split / nnx.merge).
The lines marked `# PGF` are all that the method adds to an ordinary NNX training script.

  .venv/bin/python examples/nnx_digits.py                        # MDGF-Exponential 1:8, 600 steps
  .venv/bin/python examples/nnx_digits.py --recipe=srste --flow=ste --pattern=2:4
  .venv/bin/python examples/nnx_digits.py --checkpoint=/tmp/nnx.npz --stop_at=300   # then rerun to resume
"""
import functools
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  pylint: disable=wrong-import-position
from pgf_sparsity.sparsity import Recipe, tree_paths  # noqa: E402  pylint: disable=wrong-import-position

# Paths of nnx.state(model, nnx.Param): NNX kernels are (in, out...), the layout the targets assume by default.
TARGETS = {'mlp': {'regex': r'mlp_(in|out)/kernel'},
           'qkv': {'regex': r'attention/(query|key|value)/kernel'},
           'attention_out': {'regex': r'attention/out/kernel', 'in_ndim': 2}}  # (heads, head_dim, out)


class Classifier(nnx.Module):

  def __init__(self, rngs: nnx.Rngs, width: int = 64):
    self.embed = nnx.Linear(8, width, rngs=rngs)
    self.attention = nnx.MultiHeadAttention(num_heads=4, in_features=width, decode=False, rngs=rngs)
    self.mlp_in = nnx.Linear(width, 4 * width, rngs=rngs)
    self.mlp_out = nnx.Linear(4 * width, width, rngs=rngs)
    self.head = nnx.Linear(width, 10, rngs=rngs)

  def __call__(self, images):
    h = self.embed(images)
    h = h + self.attention(h)
    h = h + self.mlp_out(jax.nn.gelu(self.mlp_in(h)))
    return self.head(h.mean(axis=1))


def cross_entropy(logits, labels):
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def train_step(graphdef, sp, tx, plan, params, opt_state, step, images, labels):
  masks, beta = sp.masks(params, plan), sp.beta(step, plan)  # PGF
  loss_fn = lambda p: cross_entropy(nnx.merge(graphdef, sp.apply(p, masks, beta))(images), labels)  # PGF: sp.apply
  loss, grads = jax.value_and_grad(loss_fn)(params)
  updates, opt_state = tx.update(grads, opt_state, params, nm_masks=masks, nm_beta=beta)  # PGF: nm_* arguments
  return optax.apply_updates(params, updates), opt_state, loss


def main(argv=None):
  args = common.parse_args(argv)
  x_train, y_train, x_test, y_test = common.load_digits(args.data)
  graphdef, params = nnx.split(Classifier(nnx.Rngs(0)), nnx.Param)
  params = nnx.as_pure(params)
  sp = Recipe.from_config(common.recipe_block(args, TARGETS)).bind(params, args.steps)  # PGF
  tx = optax.chain(sp.transform(), optax.adamw(args.learning_rate))  # PGF: sp.transform() first
  step_fn = jax.jit(functools.partial(train_step, graphdef, sp, tx), static_argnums=0)
  params, losses, stop = common.fit(args, sp, step_fn, params, tx.init(params), x_train, y_train)
  final = sp.apply(params, sp.masks(params, sp.final_plan()), 0.0)  # PGF: the exactly N:M weights
  accuracy = float(jnp.mean(jnp.argmax(nnx.merge(graphdef, final)(x_test), -1) == y_test))
  print(f'test accuracy of the N:M model: {accuracy:.4f}')
  return {'losses': losses, 'accuracy': accuracy, 'step': stop,
          'weights': {path: np.asarray(w) for path, w in tree_paths.flatten(final).items()}}


if __name__ == '__main__':
  main()
