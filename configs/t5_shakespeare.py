r"""Offline language default: a tiny T5 (byte vocabulary) on span-corrupted Shakespeare, held-out plays.

  .venv/bin/python -m pgf_sparsity.main --config=configs/t5_shakespeare.py --workdir=workdirs/t5_shakespeare
  .venv/bin/python -m pgf_sparsity.main --config=configs/t5_shakespeare.py:recipe=srste,flow=ste,ff=1:8 \
      --workdir=workdirs/t5_srste

Arguments: recipe, ff, qkv, attn_out (N:M for encoder and decoder, or none), dec_ff, dec_qkv, dec_attn_out
(the decoder's own pattern, default 'same'), flow, alpha (0: beta reaches 0.01 at 80% of the sparse
phase), dense, finetune, steps, seed, variant (tiny/small/base/large), vocab (byte, or sentencepiece: a
2,000-piece unigram model trained on the training plays on first use), runlocal (20 steps, 64 eval chunks).
Needs `bash scripts/get_data.sh` (the Shakespeare texts).
"""
import ml_collections

from pgf_sparsity import config_lib


def get_config(arg=None):
  a = config_lib.parse_arg(arg, **dict(config_lib.SPARSITY_ARGS, finetune=0.1), steps=1500, variant='tiny', vocab='byte',
                           **config_lib.T5_ARGS)
  steps = 20 if a.runlocal else a.steps
  config = ml_collections.ConfigDict()
  config.seed = a.seed
  config.dataset = dict(name='shakespeare', data_dir='', vocab=dict(kind=a.vocab, model_path='', size=2000),
                        chunk_length=128, noise_density=0.15, mean_noise_span_length=3.0,
                        eval_examples=64 if a.runlocal else 512)
  config.model = config_lib.t5_model(a.variant, dropout=0.0, dtype='float32')
  config.sparsity = config_lib.t5_sparsity_from_args(a, config_lib.decay_alpha(a, steps))
  config.batch_size = 32
  config.total_steps = steps
  config.num_epochs = None
  config_lib.set_t5_optimizer(config, 'adamw', adafactor={}, adamw=config_lib.optimizer(
      3e-3, warmup_steps=max(steps // 20, 1), min_learning_rate=1e-5, b2=0.99))
  config_lib.set_intervals(config, log_every=50, eval_every=250, checkpoint_every=250, runlocal=a.runlocal)
  config.eval_batch_size = 128
  return config_lib.complete(config)
