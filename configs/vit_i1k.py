r"""The paper's released ViT-B/16 ImageNet-1k recipe (docs/method.md, "The paper's configs"), for users with
tfds imagenet2012.

  .venv/bin/python -m pgf_sparsity.main --config=configs/vit_i1k.py:variant=B/16,recipe=mdgf_exponential,ff=1:32 \
      --workdir=workdirs/vit_b16_mdgf_1x32 --config.dataset.tfds_data_dir=/path/to/tensorflow_datasets

350 epochs (+2 cooldown), cosine with 15 warmup epochs from 1e-7 to lr = 1e-3 sqrt(batch / 4096), min lr
1e-7, AdamW (0.9, 0.999, 1e-8), weight decay 0.01, grad-norm clip 1.0, bf16, sigmoid loss on mixup (0.5)
targets, RandAugment (2, 15), random-resized crop, flip, dropout 0.1, stochastic depth 0.1.
Sparsity: MDGF-Exponential, alpha 1e-4, 1:32 on the FF layers, no dense or fine-tune phase.

Arguments: variant (Ti/S/B/L + /16 or /32), recipe, ff, qkv, attn_out (N:M or none), flow, alpha, dense,
finetune (fractions), batch, epochs, seed, runlocal (a tiny ViT for 4 steps on 32 px images: a smoke test,
e.g. on tfds mock data). `flow` defaults to 'ste', the reference code's gradient flow that produced the
released runs; flow=decayed is the paper's progressively restricted flow. Report both.
"""
import math

import ml_collections

from pgf_sparsity import config_lib
from pgf_sparsity.models import common

RUNLOCAL_MODEL = dict(variant=None, width=32, depth=1, mlp_dim=64, num_heads=2, patch_size=8, dtype='float32')


def get_config(arg=None):
  a = config_lib.parse_arg(arg, **dict(config_lib.SPARSITY_ARGS, ff='1:32', flow='ste', alpha=1e-4),
                           variant='B/16', batch=4096, epochs=350)
  config = ml_collections.ConfigDict()
  config.seed = a.seed
  config.dataset = config_lib.imagenet_dataset(image_size=224, randaugment=(2, 15))
  config.model = dict(name='vit', variant=a.variant, num_classes=1000, pool='token', dropout=0.1,
                      attention_dropout=0.0, stochastic_depth=0.1, dtype='bfloat16',
                      exact_gelu=True)  # the reference ran timm's ViT: erf GELU
  config.sparsity = config_lib.sparsity_from_args(a, common.SPARSE_TARGETS, a.alpha)
  config.batch_size = a.batch
  config.total_steps = None
  config.num_epochs = float(a.epochs + 2)
  config.optimizer = config_lib.optimizer(1e-3 * math.sqrt(a.batch / 4096), warmup_epochs=15.0, cooldown_epochs=2.0,
                                          init_learning_rate=1e-7, min_learning_rate=1e-7, weight_decay=0.01)
  config_lib.set_intervals(config, log_every=100, eval_every=3000, checkpoint_every=1000)
  config.keep_checkpoints = 3
  config.loss = 'sigmoid'
  config.mixup_alpha = 0.5
  config.eval_batch_size = 1024
  if a.runlocal:
    config_lib.imagenet_runlocal(config, RUNLOCAL_MODEL)
  return config_lib.complete(config)
