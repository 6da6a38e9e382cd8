"""Saves checkpoints back to back for test_robustness's kill -9 test: resumes from the workdir's newest good
checkpoint, then saves steps after it, each a state that is a pure function of its step, announcing on stdout
when each save begins and when it is written (so the test knows where its kills land)."""
import sys

import jax.numpy as jnp

from pgf_sparsity.training import checkpoints


def state_at(step: int):
  """A small train-state-like tree (float32, int32, bfloat16, bool leaves) that differs at every step."""
  base = jnp.arange(4096, dtype=jnp.float32).reshape(64, 64) * (step + 1)
  return {'params': {'kernel': jnp.sin(base), 'bias': jnp.cos(base[0]).astype(jnp.bfloat16)},
          'masks': {'kernel': (base.astype(jnp.int32) % (step + 2)) == 0},
          'step': jnp.int32(step)}


def main(workdir: str, last: int) -> None:
  checkpointer = checkpoints.Checkpointer(workdir, max_to_keep=2)
  _, step = checkpointer.restore_latest_good(jax_shapes(state_at(0)))
  for step in range((step or 0) + 1, last + 1):
    print(f'begin {step}', flush=True)
    checkpointer.save(step, state_at(step))
    checkpointer.wait()
    print(f'end {step}', flush=True)
  checkpointer.close()


def jax_shapes(tree):
  import jax  # pylint: disable=g-import-not-at-top
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)


if __name__ == '__main__':
  main(sys.argv[1], int(sys.argv[2]))
