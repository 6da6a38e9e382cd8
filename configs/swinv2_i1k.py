r"""SwinV2 on ImageNet-1k with the original Swin recipe and the same sparsity knobs as configs/vit_i1k.py.

  .venv/bin/python -m pgf_sparsity.main --config=configs/swinv2_i1k.py:variant=T/8,recipe=mdgf_exponential,ff=1:32 \
      --workdir=workdirs/swinv2_t --config.dataset.tfds_data_dir=/path/to/tensorflow_datasets

300 epochs (20 warmup), AdamW, weight decay 0.05, lr 5e-4 per 512 images, 256 px, softmax loss with label
smoothing 0.1, Mixup 0.8 and CutMix 1.0 switched per batch, random erasing 0.25, RandAugment (2, 9, std 0.5), stochastic
depth 0.2 (T), 0.3 (S), 0.5 (B, L).
Arguments: variant (T/S/B/L + /8 or /16: the window), recipe, ff, qkv, attn_out, flow, alpha, dense,
finetune, batch, epochs, seed, runlocal (a tiny SwinV2 for 4 steps on 32 px images).
"""
import ml_collections

from pgf_sparsity import config_lib
from pgf_sparsity.models import common

_DROP_PATH = {'T': 0.2, 'S': 0.3, 'B': 0.5, 'L': 0.5}
RUNLOCAL_MODEL = dict(variant=None, embed_dim=32, depths=(2, 2), num_heads=(2, 4), window_size=4, patch_size=2,
                      dtype='float32')


def get_config(arg=None):
  a = config_lib.parse_arg(arg, **dict(config_lib.SPARSITY_ARGS, ff='1:32', flow='ste', alpha=1e-4),
                           variant='T/8', batch=1024, epochs=300)
  if a.variant.split('/')[0] not in _DROP_PATH:
    raise ValueError(f'Config argument variant must start with one of {sorted(_DROP_PATH)}, got {a.variant!r}.')
  config = ml_collections.ConfigDict()
  config.seed = a.seed
  config.dataset = config_lib.imagenet_dataset(image_size=256, randaugment=(2, 9), magnitude_std=0.5)  # m9-mstd0.5
  config.model = dict(name='swinv2', variant=a.variant, num_classes=1000, dropout=0.0,
                      stochastic_depth=_DROP_PATH[a.variant.split('/')[0]], dtype='bfloat16',
                      norm_eps=1e-5, exact_gelu=True)  # as the reference's timm SwinV2
  config.sparsity = config_lib.sparsity_from_args(a, common.SPARSE_TARGETS, a.alpha)
  config.batch_size = a.batch
  config.total_steps = None
  config.num_epochs = float(a.epochs)
  config.optimizer = config_lib.optimizer(5e-4 * a.batch / 512, warmup_epochs=20.0, init_learning_rate=5e-7,
                                          min_learning_rate=5e-6, weight_decay=0.05, grad_clip_norm=5.0)
  config_lib.set_intervals(config, log_every=100, eval_every=3000, checkpoint_every=1000)
  config.keep_checkpoints = 3
  config.label_smoothing = 0.1
  config.mixup_alpha = 0.8
  # timm's Swin recipe: CutMix 1.0 switched with Mixup half of the time, random erasing 0.25 ('pixel').
  config.cutmix_alpha, config.mixup_switch_prob, config.random_erasing = 1.0, 0.5, 0.25
  config.eval_batch_size = 1024
  if a.runlocal:
    config_lib.imagenet_runlocal(config, RUNLOCAL_MODEL)
  return config_lib.complete(config)
