r"""The paper-scale language run: T5 v1.1 span-corruption pretraining on tfds c4/en.

  .venv/bin/python -m pgf_sparsity.main --config=configs/t5_c4.py:variant=base,ff=1:32 --workdir=workdirs/t5_c4 \
      --config.dataset.tfds_data_dir=/path/to/tensorflow_datasets \
      --config.dataset.vocab.kind=sentencepiece --config.dataset.vocab.model_path=/path/to/spiece.model

T5X-Base defaults: 524,288 steps at batch 256, inputs 512 tokens (documents concatenated and split into
568-token pieces, span corruption 15%, mean span 3, 114 targets, packed; documents_per_row 1.5 suits T5's
SentencePiece vocabulary, about 430 tokens per C4 document),
Adafactor with T5X's inverse-square-root schedule (opt=adamw: AdamW, warmup and cosine, scaled attention
logits), z-loss 1e-4, no dropout.
Arguments: variant, recipe, ff, qkv, attn_out, dec_ff, dec_qkv, dec_attn_out (the decoder's own pattern,
default 'same'), flow, alpha, dense, finetune, steps, batch, opt (adafactor|adamw), seed,
runlocal (a tiny T5 for 4 steps on 64-token chunks, e.g. on tfds mock data).
"""
import ml_collections

from pgf_sparsity import config_lib


def get_config(arg=None):
  a = config_lib.parse_arg(arg, **dict(config_lib.SPARSITY_ARGS, ff='1:32', flow='ste', alpha=1e-4),
                           variant='base', steps=524288, batch=256, opt='adafactor', **config_lib.T5_ARGS)
  config = ml_collections.ConfigDict()
  config.seed = a.seed
  config.dataset = dict(name='tfds_text', tfds_name='c4/en:3.1.0', tfds_data_dir='', train_split='train',
                        eval_split='validation', vocab=dict(kind='byte', model_path=''), inputs_length=512,
                        targets_length=0, documents_per_row=1.5, num_train_examples=364_868_892, num_eval_examples=2048)
  config.model = config_lib.t5_model(a.variant, dropout=0.0, dtype='bfloat16')
  config.sparsity = config_lib.t5_sparsity_from_args(a, a.alpha)
  config.batch_size = a.batch
  config.total_steps = a.steps
  config.num_epochs = None
  config_lib.set_t5_optimizer(  # T5X: Adafactor, 1/sqrt(max(step, 10k))
      config, a.opt, adafactor=dict(learning_rate=1e-2, schedule='rsqrt', warmup_steps=10_000),
      adamw=config_lib.optimizer(1e-3, warmup_steps=10_000, min_learning_rate=1e-5, b2=0.99))
  config_lib.set_intervals(config, log_every=100, eval_every=5000, checkpoint_every=5000)
  config.keep_checkpoints = 3
  config_lib.set_t5x_loss(config)
  config.eval_batch_size = 256
  if a.runlocal:
    config.dataset.update(inputs_length=64, num_eval_examples=8)
    config_lib.t5_runlocal(config)
  return config_lib.complete(config)
