"""Input pipelines behind one interface (base.Pipeline and its DataSpec): in-memory offline datasets, the
Shakespeare corpus, and tfds image and text datasets (imported only when configured: they need
TensorFlow)."""
from pgf_sparsity.data.base import DataSpec, DecodingPipeline, Pipeline


def _tensorflow_on_cpu() -> None:
  """TensorFlow (tf.data) keeps off the accelerators, which are JAX's. Imported here,
  after the config is validated, so that bad input is reported without TensorFlow's seconds of import."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:  # TensorFlow's runtime already started (e.g. in a test process): leave it
    pass


def build(config) -> Pipeline:
  """The pipeline of `config.dataset` with the run's batch sizes and seed (TensorFlow, for tf.data, is
  imported for the tfds pipelines alone)."""
  dataset = config.dataset
  name = dataset.name
  args = (dataset, config.batch_size, config.eval_batch_size or config.batch_size, config.seed)
  # pylint: disable=g-import-not-at-top
  if name in ('tfds', 'tfds_text'):
    _tensorflow_on_cpu()
  if name == 'tfds':
    from pgf_sparsity.data import tfds_images
    return tfds_images.TfdsImages(*args)
  if name == 'tfds_text':
    from pgf_sparsity.data import tfds_text
    return tfds_text.TfdsText(*args)
  if name == 'shakespeare':
    from pgf_sparsity.data import text
    return text.ShakespeareSpanCorruption(*args)
  from pgf_sparsity.data import images
  if name == 'synthetic':
    return images.SyntheticImages(*args)
  return images.OfflineImages(*args)


__all__ = ['DataSpec', 'DecodingPipeline', 'Pipeline', 'build']
