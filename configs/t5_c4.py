r"""The paper-scale language run: T5 v1.1 span-corruption pretraining on tfds c4/en.

  .venv/bin/python -m pgf_sparsity.main --config=configs/t5_c4.py:variant=base,ff=1:32 --workdir=workdirs/t5_c4 \
      --config.dataset.tfds_data_dir=/path/to/tensorflow_datasets \
      --config.dataset.vocab.kind=sentencepiece --config.dataset.vocab.model_path=/path/to/spiece.model

T5X-Base defaults: 524,288 steps at batch 256, inputs 512 tokens (span corruption 15%, mean span 3),
Adafactor-like schedule replaced by AdamW with warmup and cosine (documented deviation), no dropout.
Arguments: variant, recipe, ff, qkv, attn_out, dec_ff, dec_qkv, dec_attn_out (the decoder's own pattern,
default 'same'), flow, alpha, dense, finetune, steps, batch, seed.
"""
import ml_collections

from pgf_sparsity import config_lib


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant='base', recipe='mdgf_exponential', ff='1:32', qkv='none',
                           attn_out='none', flow='ste', alpha=1e-4, dense=0.0, finetune=0.0, steps=524288,
                           batch=256, seed=0, **config_lib.T5_ARGS)
  config = ml_collections.ConfigDict()
  config.seed = a.seed
  config.dataset = dict(name='tfds_text', tfds_name='c4/en:3.1.0', tfds_data_dir='', train_split='train',
                        eval_split='validation', vocab=dict(kind='byte', model_path=''), chunk_length=512,
                        inputs_length=0, targets_length=0, num_train_examples=364_868_892, num_eval_examples=2048)
  config.model = dict(name='t5', variant=a.variant, vocab_size=None, dropout=0.0, tie_embeddings=False,
                      dtype='bfloat16')
  config.sparsity = config_lib.t5_sparsity_from_args(a, a.alpha)
  config.batch_size = a.batch
  config.eval_batch_size = 256
  config.total_steps = a.steps
  config.num_epochs = None
  config.optimizer = dict(learning_rate=1e-3, init_learning_rate=0.0, min_learning_rate=1e-5, warmup_steps=10_000,
                          weight_decay=0.0, b1=0.9, b2=0.99, eps=1e-8, grad_clip_norm=1.0)
  config.loss = 'softmax'
  config.label_smoothing = 0.0
  config.mixup_alpha = 0.0
  config.log_every_steps = 100
  config.eval_every_steps = 5000
  config.checkpoint_every_steps = 5000
  config.keep_checkpoints = 3
  config.diagnostics_every_steps = 0
  config.nonfinite = 'stop'
  return config
