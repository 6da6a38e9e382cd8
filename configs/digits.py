r"""A seconds-long run: a tiny ViT on sklearn's 8x8 digits (bundled with scikit-learn). Tests use it.

  .venv/bin/python -m pgf_sparsity.main --config=configs/digits.py:recipe=sdgf_stepwise --workdir=workdirs/digits

Arguments as in configs/fashion_mnist.py: recipe, ff, qkv, attn_out, flow, alpha, dense, finetune, steps, seed,
runlocal.
"""
import ml_collections

from pgf_sparsity import config_lib
from pgf_sparsity.models import common


def get_config(arg=None):
  a = config_lib.parse_arg(arg, **dict(config_lib.SPARSITY_ARGS, ff='1:4', finetune=0.1), steps=300)
  steps = 20 if a.runlocal else a.steps
  config = ml_collections.ConfigDict()
  config.seed = a.seed
  config.dataset = dict(name='digits', flip=False, pad=0, train_examples=0, eval_examples=0)
  config.model = dict(name='vit', variant=None, num_classes=10, width=32, depth=1, mlp_dim=64, num_heads=2,
                      patch_size=2, pool='gap', dropout=0.0, attention_dropout=0.0, stochastic_depth=0.0,
                      dtype='float32')
  config.sparsity = config_lib.sparsity_from_args(a, common.SPARSE_TARGETS, config_lib.decay_alpha(a, steps))
  config.batch_size = 64
  config.total_steps = steps
  config.num_epochs = None
  config.optimizer = config_lib.optimizer(3e-3, warmup_steps=max(steps // 20, 1), min_learning_rate=1e-5,
                                          weight_decay=1e-4)
  config_lib.set_intervals(config, log_every=50, eval_every=100, checkpoint_every=100, runlocal=a.runlocal)
  config.eval_batch_size = 400
  return config_lib.complete(config)
