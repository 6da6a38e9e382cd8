r"""SwinV2 on ImageNet-1k with the original Swin recipe and the same sparsity knobs as configs/vit_i1k.py.

  .venv/bin/python -m pgf_sparsity.main --config=configs/swinv2_i1k.py:variant=T/8,recipe=mdgf_exponential,ff=1:32 \
      --workdir=workdirs/swinv2_t --config.dataset.tfds_data_dir=/path/to/tensorflow_datasets

300 epochs (20 warmup), AdamW, weight decay 0.05, lr 5e-4 per 512 images, 256 px, softmax loss with label
smoothing 0.1, mixup 0.8, RandAugment (2, 9), stochastic depth 0.2 (T), 0.3 (S), 0.5 (B, L).
Arguments: variant (T/S/B/L + /8 or /16: the window), recipe, ff, qkv, attn_out, flow, alpha, dense,
finetune, batch, epochs, seed.
"""
import ml_collections

from pgf_sparsity import config_lib

_DROP_PATH = {'T': 0.2, 'S': 0.3, 'B': 0.5, 'L': 0.5}


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant='T/8', recipe='mdgf_exponential', ff='1:32', qkv='none',
                           attn_out='none', flow='ste', alpha=1e-4, dense=0.0, finetune=0.0, batch=1024,
                           epochs=300, seed=0)
  config = ml_collections.ConfigDict()
  config.seed = a.seed
  config.dataset = dict(name='tfds', tfds_name='imagenet2012', tfds_data_dir='', train_split='train',
                        eval_split='validation', image_size=256, flip=True,
                        randaugment=dict(num_layers=2, magnitude=9), shuffle_buffer=250_000,
                        num_train_examples=0, num_eval_examples=0)
  config.model = dict(name='swinv2', variant=a.variant, num_classes=1000, dropout=0.0,
                      stochastic_depth=_DROP_PATH[a.variant.split('/')[0]], dtype='bfloat16')
  config.sparsity = config_lib.sparsity_from_args(a, config_lib.VIT_TARGETS, a.alpha)
  config.batch_size = a.batch
  config.eval_batch_size = 1024
  config.total_steps = None
  config.num_epochs = float(a.epochs)
  config.optimizer = dict(learning_rate=5e-4 * a.batch / 512, init_learning_rate=5e-7, min_learning_rate=5e-6,
                          warmup_epochs=20.0, weight_decay=0.05, b1=0.9, b2=0.999, eps=1e-8, grad_clip_norm=5.0)
  config.loss = 'softmax'
  config.label_smoothing = 0.1
  config.diagnostics_every_steps = 0  # > 0: the gradient-noise diagnostic every that many steps
  config.nonfinite = 'stop'  # or 'skip': drop updates with a non-finite loss or gradient
  config.mixup_alpha = 0.8
  config.log_every_steps = 100
  config.eval_every_steps = 3000
  config.checkpoint_every_steps = 1000
  config.keep_checkpoints = 3
  return config
