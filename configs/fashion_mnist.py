r"""The offline default: a small ViT on Fashion-MNIST, MDGF-Exponential at 1:8 on the FF layers.

  .venv/bin/python -m pgf_sparsity.main --config=configs/fashion_mnist.py --workdir=workdirs/fmnist
  .venv/bin/python -m pgf_sparsity.main --config=configs/fashion_mnist.py:recipe=srste,flow=ste,ff=1:32 \
      --workdir=workdirs/fmnist_srste

Arguments: recipe, ff, qkv, attn_out (N:M or none), flow (decayed|ste), alpha (0: decays beta to 0.01 at
80% of the sparse phase), dense, finetune (fractions), steps, seed, size (base: width 96, depth 3, patch 7,
16 tokens an image; large: the same with patch 4, 49 tokens, 3.5x the compute for about the same accuracy;
small: width 64, depth 2, patch 7, the small-scale study's model), runlocal (a seconds-long smoke run).
Needs the data from `bash scripts/get_data.sh`.
"""
import ml_collections

from pgf_sparsity import config_lib
from pgf_sparsity.models import common

SIZES = {
    'base': dict(width=96, depth=3, mlp_dim=384, num_heads=3, patch_size=7),
    'large': dict(width=96, depth=3, mlp_dim=384, num_heads=3, patch_size=4),
    'small': dict(width=64, depth=2, mlp_dim=256, num_heads=2, patch_size=7),
}


def get_config(arg=None):
  a = config_lib.parse_arg(arg, **dict(config_lib.SPARSITY_ARGS, finetune=0.1), steps=4000, size='base')
  if a.size not in SIZES:
    raise ValueError(f'Config argument size must be one of {sorted(SIZES)}, got {a.size!r}.')
  steps = 30 if a.runlocal else a.steps
  config = ml_collections.ConfigDict()
  config.seed = a.seed
  config.dataset = dict(name='fashion_mnist', data_dir='', flip=True, pad=0, train_examples=0,
                        eval_examples=0)
  config.model = dict(name='vit', variant=None, num_classes=10, **SIZES[a.size], pool='gap', dropout=0.0,
                      attention_dropout=0.0, stochastic_depth=0.0, dtype='float32')
  config.sparsity = config_lib.sparsity_from_args(a, common.SPARSE_TARGETS, config_lib.decay_alpha(a, steps))
  config.batch_size = 128
  config.total_steps = steps
  config.num_epochs = None
  config.optimizer = config_lib.optimizer(2e-3, warmup_steps=max(steps // 20, 1), min_learning_rate=1e-5,
                                          weight_decay=0.05)
  config_lib.set_intervals(config, log_every=100, eval_every=1000, checkpoint_every=500, runlocal=a.runlocal)
  config.eval_batch_size = 1000
  return config_lib.complete(config)
