"""RandAugment (Cubuk et al. 2020) on uint8 images in TensorFlow: `num_layers` random ops per image, each at
`magnitude` on timm's and big_vision's scale, where 10 is each op's published maximum (rotate 30 degrees,
shear 0.3, translate 45% of the side, enhance 1 +- 0.9, ...). Severity increases with the magnitude for every
op (timm's "increasing" variants). As in timm, the magnitude is clipped to `magnitude_max` (default 10), so
the reference ViT recipe's magnitude 15 runs at 10; magnitude_max=None lets it extrapolate as big_vision
does (15 = 1.5x the maxima). `magnitude_std` draws each op's magnitude around it (timm's "mstd")."""
import math
from typing import Optional

import tensorflow as tf

_FILL = 128
LEVEL_DENOM = 10.0  # the magnitude of each op's published maximum


def rotate_degrees(level):
  return level / LEVEL_DENOM * 30.0


def shear_factor(level):
  return level / LEVEL_DENOM * 0.3


def translate_fraction(level):
  return level / LEVEL_DENOM * 0.45


def enhance_change(level):
  """The change of an enhancement factor away from 1 (timm keeps the factor >= 0.1)."""
  return level / LEVEL_DENOM * 0.9


def _floor(x):
  return tf.cast(tf.floor(x), tf.int32)


def posterize_bits(level):
  """Most significant bits kept: 4 at magnitude 0, down to 1 (never 0: a black image)."""
  return tf.maximum(1, 4 - _floor(level / LEVEL_DENOM * 4))


def solarize_threshold(level):
  """Pixels at or above it are inverted: 256 (none) at magnitude 0, 0 (all) at 10."""
  return 256 - tf.minimum(256, _floor(level / LEVEL_DENOM * 256))


def solarize_add_amount(level):
  return tf.minimum(128, _floor(level / LEVEL_DENOM * 110))


def effective_level(magnitude: float, magnitude_max: Optional[float] = LEVEL_DENOM) -> float:
  """The level the ops run at: the magnitude, clipped to magnitude_max unless that is None."""
  if not (isinstance(magnitude, (int, float)) and math.isfinite(magnitude) and magnitude >= 0):
    raise ValueError(f'RandAugment magnitude must be a finite number >= 0, got {magnitude!r}.')
  return float(min(magnitude, magnitude_max) if magnitude_max is not None else magnitude)


def _blend(a, b, factor):
  """a + factor (b - a), clipped to uint8 (factor > 1 extrapolates)."""
  a, b = tf.cast(a, tf.float32), tf.cast(b, tf.float32)
  return tf.cast(tf.clip_by_value(a + factor * (b - a), 0.0, 255.0), tf.uint8)


def _transform(image, matrix):
  """Projective transform with a flat 8-vector, nearest neighbour, grey fill."""
  out = tf.raw_ops.ImageProjectiveTransformV3(
      images=image[None], transforms=tf.cast(matrix, tf.float32)[None],
      output_shape=tf.shape(image)[:2], fill_value=float(_FILL), interpolation='NEAREST', fill_mode='CONSTANT')
  return out[0]


def _grey(image):
  return tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image))


def autocontrast(image, _):
  def channel(c):
    c = tf.cast(c, tf.float32)
    lo, hi = tf.reduce_min(c), tf.reduce_max(c)
    scaled = (c - lo) * 255.0 / tf.maximum(hi - lo, 1.0)
    return tf.cast(tf.where(hi > lo, scaled, c), tf.uint8)
  return tf.stack([channel(image[..., i]) for i in range(3)], -1)


def equalize(image, _):
  def channel(c):
    hist = tf.histogram_fixed_width(tf.cast(c, tf.int32), [0, 255], nbins=256)
    nonzero = tf.boolean_mask(hist, hist != 0)
    step = (tf.reduce_sum(nonzero) - nonzero[-1]) // 255
    lut = (tf.cumsum(hist) + step // 2) // tf.maximum(step, 1)
    lut = tf.clip_by_value(tf.concat([[0], lut[:-1]], 0), 0, 255)
    return tf.cast(tf.where(step == 0, tf.cast(c, tf.int32), tf.gather(lut, tf.cast(c, tf.int32))), tf.uint8)
  return tf.stack([channel(image[..., i]) for i in range(3)], -1)


def invert(image, _):
  return 255 - image


def identity(image, _):
  return image


def rotate(image, level, sign=1.0):
  angle = sign * rotate_degrees(level) * math.pi / 180.0
  h, w = tf.cast(tf.shape(image)[0], tf.float32), tf.cast(tf.shape(image)[1], tf.float32)
  cos, sin = tf.cos(angle), tf.sin(angle)
  x0 = (w - 1) / 2 - (cos * (w - 1) / 2 - sin * (h - 1) / 2)
  y0 = (h - 1) / 2 - (sin * (w - 1) / 2 + cos * (h - 1) / 2)
  return _transform(image, [cos, -sin, x0, sin, cos, y0, 0.0, 0.0])


def posterize(image, level):
  shift = tf.cast(8 - posterize_bits(level), tf.uint8)
  return tf.bitwise.left_shift(tf.bitwise.right_shift(image, shift), shift)


def solarize(image, level):
  return tf.where(tf.cast(image, tf.int32) < solarize_threshold(level), image, 255 - image)


def solarize_add(image, level):
  added = tf.cast(tf.clip_by_value(tf.cast(image, tf.int32) + solarize_add_amount(level), 0, 255), tf.uint8)
  return tf.where(image < 128, added, image)


def _enhance(fn):
  return lambda image, level, sign=1.0: fn(image, tf.maximum(0.1, 1.0 + sign * enhance_change(level)))


color = _enhance(lambda image, f: _blend(_grey(image), image, f))
contrast = _enhance(lambda image, f: _blend(
    tf.fill(tf.shape(image), tf.cast(tf.reduce_mean(tf.cast(tf.image.rgb_to_grayscale(image), tf.float32)),
                                     tf.uint8)), image, f))
brightness = _enhance(lambda image, f: _blend(tf.zeros_like(image), image, f))


def _sharpness(image, factor):
  kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
  kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
  blurred = tf.nn.depthwise_conv2d(tf.cast(image, tf.float32)[None], kernel, [1, 1, 1, 1], 'SAME')[0]
  return _blend(tf.cast(tf.clip_by_value(tf.round(blurred), 0, 255), tf.uint8), image, factor)


sharpness = _enhance(_sharpness)


def shear_x(image, level, sign=1.0):
  return _transform(image, [1.0, sign * shear_factor(level), 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])


def shear_y(image, level, sign=1.0):
  return _transform(image, [1.0, 0.0, 0.0, sign * shear_factor(level), 1.0, 0.0, 0.0, 0.0])


def translate_x(image, level, sign=1.0):
  pixels = sign * translate_fraction(level) * tf.cast(tf.shape(image)[1], tf.float32)
  return _transform(image, [1.0, 0.0, pixels, 0.0, 1.0, 0.0, 0.0, 0.0])


def translate_y(image, level, sign=1.0):
  pixels = sign * translate_fraction(level) * tf.cast(tf.shape(image)[0], tf.float32)
  return _transform(image, [1.0, 0.0, 0.0, 0.0, 1.0, pixels, 0.0, 0.0])


OPS = [identity, autocontrast, equalize, invert, rotate, posterize, solarize, solarize_add, color, contrast,
       brightness, sharpness, shear_x, shear_y, translate_x, translate_y]


# Ops whose direction is random (timm's random negation); `sign` is +-1.
SIGNED_OPS = (rotate, color, contrast, brightness, sharpness, shear_x, shear_y, translate_x, translate_y)


def randaugment(image, seed, num_layers: int = 2, magnitude: float = 15.0,
                magnitude_max: Optional[float] = LEVEL_DENOM, magnitude_std: float = 0.0):
  """Applies `num_layers` ops chosen uniformly at random to a uint8 (h, w, 3) image; the choices, signs and
  (with `magnitude_std`, timm's "mstd") per-op magnitudes ~ N(magnitude, magnitude_std) clipped to
  [0, magnitude_max] are a function of `seed` (int[2], TensorFlow's stateless random ops), so an example's
  augmentation does not depend on what ran before it."""
  level = effective_level(magnitude, magnitude_max)
  seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 3 * num_layers)
  upper = magnitude_max if magnitude_max is not None else math.inf
  for layer in range(num_layers):
    choice_seed, sign_seed, level_seed = seeds[3 * layer], seeds[3 * layer + 1], seeds[3 * layer + 2]
    choice = tf.random.stateless_uniform([], choice_seed, 0, len(OPS), tf.int32)
    sign = tf.where(tf.random.stateless_uniform([], sign_seed) < 0.5, -1.0, 1.0)
    drawn = tf.clip_by_value(magnitude + magnitude_std * tf.random.stateless_normal([], level_seed), 0.0, upper)
    op_level = drawn if magnitude_std > 0 else tf.constant(level, tf.float32)
    branches = [lambda op=op: op(image, op_level, sign) if op in SIGNED_OPS else op(image, op_level) for op in OPS]
    image = tf.ensure_shape(tf.switch_case(choice, branches), [None, None, 3])
  return image
