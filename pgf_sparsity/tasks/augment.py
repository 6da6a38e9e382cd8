"""Batch-level image augmentation in the train step, as timm's recipes use it (jax.random, so a step's
augmentation is a function of the run's seed and the step):

  random erasing   per image with probability `random_erasing`: a rectangle of 2%-33% of the image, aspect
                   ratio log-uniform in [0.3, 3.3] (the first of 10 draws that fits), filled with N(0, 1)
                   noise (timm's mode 'pixel'); before mixing, as timm erases per sample
  Mixup            images and labels blended with the batch reversed, lambda ~ Beta(mixup_alpha, mixup_alpha)
  CutMix           a box of the reversed batch pasted in, its side sqrt(1 - lambda) of the image's, centred
                   uniformly and clipped; lambda ~ Beta(cutmix_alpha, cutmix_alpha), then corrected to the
                   box's true area (timm's correct_lam)
  switching        with both, CutMix with probability `mixup_switch_prob` per batch, else Mixup
"""
import math

import jax
import jax.numpy as jnp

ERASE_AREA = (0.02, 1.0 / 3.0)
ERASE_LOG_ASPECT = (math.log(0.3), math.log(1.0 / 0.3))
ERASE_ATTEMPTS = 10


def _erase_one(key, image, prob: float):
  height, width = image.shape[0], image.shape[1]
  k_apply, k_area, k_aspect, k_top, k_left, k_noise = jax.random.split(key, 6)
  area = height * width * jax.random.uniform(k_area, (ERASE_ATTEMPTS,), minval=ERASE_AREA[0], maxval=ERASE_AREA[1])
  aspect = jnp.exp(jax.random.uniform(k_aspect, (ERASE_ATTEMPTS,), minval=ERASE_LOG_ASPECT[0],
                                      maxval=ERASE_LOG_ASPECT[1]))
  h, w = jnp.round(jnp.sqrt(area * aspect)).astype(jnp.int32), jnp.round(jnp.sqrt(area / aspect)).astype(jnp.int32)
  fits = (h < height) & (w < width)
  first = jnp.argmax(fits)
  h, w = h[first], w[first]
  top = jnp.floor(jax.random.uniform(k_top) * (height - h + 1)).astype(jnp.int32)
  left = jnp.floor(jax.random.uniform(k_left) * (width - w + 1)).astype(jnp.int32)
  rows, cols = jnp.arange(height)[:, None], jnp.arange(width)[None, :]
  inside = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
  erase = inside & fits.any() & (jax.random.uniform(k_apply) < prob)
  return jnp.where(erase[:, :, None], jax.random.normal(k_noise, image.shape, image.dtype), image)


def random_erasing(key, images, prob: float):
  return jax.vmap(lambda k, x: _erase_one(k, x, prob))(jax.random.split(key, images.shape[0]), images)


def cutmix_box(key, lam, height: int, width: int):
  """(a (height, width) boolean box covering about 1 - lam of the image, lam corrected to its area)."""
  k_y, k_x = jax.random.split(key)
  ratio = jnp.sqrt(1.0 - lam)
  cut_h, cut_w = (height * ratio).astype(jnp.int32), (width * ratio).astype(jnp.int32)
  cy, cx = jax.random.randint(k_y, (), 0, height), jax.random.randint(k_x, (), 0, width)
  y0, y1 = jnp.clip(cy - cut_h // 2, 0, height), jnp.clip(cy + cut_h // 2, 0, height)
  x0, x1 = jnp.clip(cx - cut_w // 2, 0, width), jnp.clip(cx + cut_w // 2, 0, width)
  rows, cols = jnp.arange(height)[:, None], jnp.arange(width)[None, :]
  box = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)
  return box, 1.0 - ((y1 - y0) * (x1 - x0)) / (height * width)


def mix(key, images, labels, mixup_alpha: float, cutmix_alpha: float = 0.0, switch_prob: float = 0.5):
  """Mixup and/or CutMix of a batch with itself reversed; (images, soft labels)."""
  lam = jax.random.beta(key, mixup_alpha, mixup_alpha) if mixup_alpha > 0 else jnp.ones(())
  mixed = lam * images + (1 - lam) * images[::-1]
  if cutmix_alpha > 0:
    k_switch, k_lam, k_box = jax.random.split(jax.random.fold_in(key, 1), 3)
    box, cut_lam = cutmix_box(k_box, jax.random.beta(k_lam, cutmix_alpha, cutmix_alpha), *images.shape[1:3])
    use_cutmix = (jax.random.uniform(k_switch) < switch_prob) if mixup_alpha > 0 else True
    mixed = jnp.where(use_cutmix, jnp.where(box[None, :, :, None], images[::-1], images), mixed)
    lam = jnp.where(use_cutmix, cut_lam, lam)
  return mixed, lam * labels + (1 - lam) * labels[::-1]
