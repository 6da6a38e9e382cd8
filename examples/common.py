"""What the examples share and is not the method: sklearn's 8x8 digits, batches as a function of the step,
the command line, a recipe block from it, and a checkpoint of any pytree in one .npz file.

The data come from scikit-learn, or from an .npz with x_train, y_train, x_test, y_test (`--data`), so that
an example runs where only the core package is installed.
"""
import argparse
import os
from typing import Any, Dict, Optional, Tuple

import jax
import numpy as np

from pgf_sparsity.sparsity import schedules

Arrays = Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def load_digits(path: str = '') -> Arrays:
  """(x_train, y_train, x_test, y_test): 8x8 images in [0, 1], float32; the last 297 images are the test set."""
  if path:
    with np.load(path) as data:
      return tuple(data[k] for k in ('x_train', 'y_train', 'x_test', 'y_test'))
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  digits = datasets.load_digits()
  x, y = (digits.images / 16.0).astype(np.float32), digits.target.astype(np.int32)
  return x[:-297], y[:-297], x[-297:], y[-297:]


def batch(x: np.ndarray, y: np.ndarray, step: int, size: int = 64, seed: int = 0):
  """The training batch of `step`: a permutation per epoch, so that a resumed run sees the same data."""
  per_epoch = len(x) // size
  order = np.random.default_rng([seed, step // per_epoch]).permutation(len(x))
  rows = order[(step % per_epoch) * size:(step % per_epoch + 1) * size]
  return x[rows], y[rows]


def parse_args(argv=None, **defaults) -> argparse.Namespace:
  parser = argparse.ArgumentParser()
  parser.add_argument('--recipe', default=defaults.get('recipe', 'mdgf_exponential'))
  parser.add_argument('--flow', default=defaults.get('flow', 'decayed'))
  parser.add_argument('--pattern', default=defaults.get('pattern', '1:8'), help='N:M of every sparse kernel')
  parser.add_argument('--steps', type=int, default=defaults.get('steps', 600))
  parser.add_argument('--learning_rate', type=float, default=defaults.get('learning_rate', 3e-3))
  parser.add_argument('--checkpoint', default='', help='save here at the end; resume from it if it exists')
  parser.add_argument('--stop_at', type=int, default=0, help='stop (checkpointed) after this step')
  parser.add_argument('--data', default='', help='an .npz of the digits instead of scikit-learn')
  return parser.parse_args(argv)


def recipe_block(args: argparse.Namespace, targets: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
  """The sparsity block: the recipe on every target at --pattern, MDGF's alpha bringing beta to 0.01 at
  80% of the sparse phase (the last 10% fine-tunes with binary masks), SDGF's custom frames 2:4 -> N:M."""
  n, m = (int(v) for v in args.pattern.split(':'))
  block = {'recipe': args.recipe, 'flow': args.flow, 'finetune_fraction': 0.1,
           'targets': {name: dict(t, n=n, m=m) for name, t in targets.items()}}
  if args.recipe.startswith('mdgf_'):
    block['alpha'] = schedules.decay_alpha(args.recipe.split('_', 1)[1], 0.9 * args.steps)
  if args.recipe == 'sdgf_custom':
    block['sdgf_custom'] = {name: [[m // 2, m], [n, m]] for name in targets}
  return block


def save(path: str, step: int, tree) -> None:
  """Every leaf of `tree` and the step, in one .npz (written to a temporary name, then renamed)."""
  leaves = {f'leaf_{i}': np.asarray(leaf) for i, leaf in enumerate(jax.tree.leaves(tree))}
  with open(path + '.tmp', 'wb') as f:
    np.savez(f, step=step, **leaves)
  os.replace(path + '.tmp', path)


def restore(path: str, like) -> Optional[Tuple[int, Any]]:
  """(step, a tree of `like`'s structure) from `save`'s file, or None where there is none."""
  if not path or not os.path.exists(path):
    return None
  with np.load(path) as data:
    leaves = [data[f'leaf_{i}'] for i in range(len(jax.tree.leaves(like)))]
    return int(data['step']), jax.tree.unflatten(jax.tree.structure(like), leaves)


def fit(args: argparse.Namespace, sp, step_fn, params, opt_state, x_train, y_train):
  """The examples' loop: resume from --checkpoint if it exists, run `step_fn(sp.plan(step), params, opt_state,
  step, images, labels)` (# PGF: the step's plan, static, so one compilation per phase and SDGF frame) up to
  --stop_at or --steps, save the checkpoint. Returns (params, per-step losses of this run, the step reached)."""
  start = 0
  restored = restore(args.checkpoint, (params, opt_state))
  if restored:
    start, (params, opt_state) = restored
  stop = min(args.stop_at or args.steps, args.steps)
  losses = []
  for step in range(start, stop):
    params, opt_state, loss = step_fn(sp.plan(step), params, opt_state, step, *batch(x_train, y_train, step))
    losses.append(float(loss))
    if step % 100 == 0:
      print(f'step {step}: loss {float(loss):.4f}, {sp.plan(step).phase} phase {sp.plan(step).patterns}')
  if args.checkpoint:
    save(args.checkpoint, stop, (params, opt_state))
  return params, losses, stop
