r"""A seconds-long run: a tiny ViT on sklearn's 8x8 digits (bundled with scikit-learn). Tests use it.

  .venv/bin/python -m pgf_sparsity.main --config=configs/digits.py:recipe=sdgf_stepwise --workdir=workdirs/digits

Arguments as in configs/fashion_mnist.py: recipe, ff, qkv, attn_out, flow, alpha, dense, finetune, steps, seed.
"""
import ml_collections

from pgf_sparsity import config_lib


def get_config(arg=None):
  a = config_lib.parse_arg(arg, recipe='mdgf_exponential', ff='1:4', qkv='none', attn_out='none',
                           flow='decayed', alpha=0.0, dense=0.0, finetune=0.1, steps=300, seed=0)
  config = ml_collections.ConfigDict()
  config.seed = a.seed
  config.dataset = dict(name='digits', flip=False, pad=0, train_examples=0, eval_examples=0)
  config.model = dict(name='vit', variant=None, num_classes=10, width=32, depth=1, mlp_dim=64, num_heads=2,
                      patch_size=2, pool='gap', dropout=0.0, attention_dropout=0.0, stochastic_depth=0.0,
                      dtype='float32')
  alpha = config_lib.decay_alpha(a, a.steps)
  config.sparsity = config_lib.sparsity_from_args(a, config_lib.VIT_TARGETS, alpha)
  config.batch_size = 64
  config.eval_batch_size = 400
  config.total_steps = a.steps
  config.num_epochs = None
  config.optimizer = dict(learning_rate=3e-3, init_learning_rate=0.0, min_learning_rate=1e-5,
                          warmup_steps=max(a.steps // 20, 1), weight_decay=1e-4, b1=0.9, b2=0.999, eps=1e-8,
                          grad_clip_norm=1.0)
  config.loss = 'softmax'
  config.label_smoothing = 0.0
  config.diagnostics_every_steps = 0  # > 0: the gradient-noise diagnostic every that many steps
  config.nonfinite = 'stop'  # or 'skip': drop updates with a non-finite loss or gradient
  config.mixup_alpha = 0.0
  config.log_every_steps = 50
  config.eval_every_steps = 100
  config.checkpoint_every_steps = 100
  config.keep_checkpoints = 2
  return config
