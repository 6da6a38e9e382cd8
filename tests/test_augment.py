"""CutMix, Mixup switching and random erasing (timm's Swin recipe), against their definitions."""
import jax
import jax.numpy as jnp
import numpy as np

from pgf_sparsity.tasks import augment


def _batch():
  images = jnp.asarray(np.random.default_rng(0).normal(size=(4, 20, 30, 3)), jnp.float32)
  labels = jax.nn.one_hot(jnp.arange(4), 4)
  return images, labels


def test_cutmix_box_and_its_lambda():
  for seed in range(20):
    lam = jax.random.uniform(jax.random.PRNGKey(100 + seed))
    box, corrected = augment.cutmix_box(jax.random.PRNGKey(seed), lam, 20, 30)
    rows, cols = np.nonzero(np.asarray(box))
    np.testing.assert_allclose(float(corrected), 1.0 - float(box.sum()) / 600, rtol=1e-6)  # the share left
    if len(rows):  # one solid rectangle, its sides at most sqrt(1 - lam) of the image's
      height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
      assert box.sum() == height * width
      side = np.sqrt(1 - float(lam))
      assert height <= int(20 * side) and width <= int(30 * side)


def test_cutmix_pastes_the_reversed_batch_and_mixes_labels_by_area():
  images, labels = _batch()
  mixed, soft = augment.mix(jax.random.PRNGKey(3), images, labels, 0.0, cutmix_alpha=1.0)
  from_self = np.all(np.asarray(mixed) == np.asarray(images), axis=-1)
  from_reversed = np.all(np.asarray(mixed) == np.asarray(images[::-1]), axis=-1)
  assert np.all(from_self | from_reversed)  # every pixel from one image or the other: no blending
  share = 1.0 - from_reversed[0].mean()
  np.testing.assert_allclose(soft[0, 0], share, atol=1e-6)
  np.testing.assert_allclose(soft[0, 3], 1 - share, atol=1e-6)
  np.testing.assert_allclose(soft.sum(-1), 1.0, atol=1e-6)


def test_switching_picks_cutmix_or_mixup_per_batch():
  images, labels = _batch()
  kinds = set()
  for seed in range(16):
    mixed, _ = augment.mix(jax.random.PRNGKey(seed), images, labels, 0.8, cutmix_alpha=1.0, switch_prob=0.5)
    exact = np.all((np.asarray(mixed) == np.asarray(images)) | (np.asarray(mixed) == np.asarray(images[::-1])))
    kinds.add('cutmix' if exact else 'mixup')
  assert kinds == {'cutmix', 'mixup'}
  always, _ = augment.mix(jax.random.PRNGKey(0), images, labels, 0.8, cutmix_alpha=1.0, switch_prob=1.0)
  assert np.all((np.asarray(always) == np.asarray(images)) | (np.asarray(always) == np.asarray(images[::-1])))


def test_random_erasing_replaces_one_rectangle_of_the_published_size():
  images, _ = _batch()
  np.testing.assert_array_equal(augment.random_erasing(jax.random.PRNGKey(0), images, 0.0), images)
  for seed in range(5):
    erased = np.asarray(augment.random_erasing(jax.random.PRNGKey(seed), images, 1.0))
    for before, after in zip(np.asarray(images), erased):
      changed = np.any(before != after, axis=-1)
      rows, cols = np.nonzero(changed)
      assert changed.sum() == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)  # a rectangle
      assert 0.02 * 600 - 30 <= changed.sum() <= 600 / 3 + 30  # 2%-33% of the image, up to rounding
