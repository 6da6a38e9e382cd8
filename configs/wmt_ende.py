r"""Encoder-decoder translation as in T5: English to German on tfds wmt14_translate/de-en ("translate English to
German: ..."), evaluated on newstest2014 (the tfds test split) by corpus BLEU (sacrebleu, intl tokenization,
untruncated references) of beam search (4 beams, length penalty 0.6), plus teacher-forced loss and token
accuracy.

  .venv/bin/python -m pgf_sparsity.main --config=configs/wmt_ende.py:variant=base,ff=1:32 \
      --workdir=workdirs/wmt_ende --config.dataset.tfds_data_dir=/path/to/tensorflow_datasets

Arguments: pair (the tfds config, e.g. de-en, fr-en), source, target (languages of the pair), variant, recipe, ff, qkv, attn_out, dec_ff, dec_qkv,
dec_attn_out, flow, alpha, dense, finetune, steps, batch, opt (adafactor|adamw), seed,
init (the workdir of a pretraining run, e.g. t5_c4, or with init_format=hf_t5|t5x Hugging Face or T5X T5 v1.1
weights), runlocal (a tiny T5 for 4 steps, e.g. on tfds mock data).
"""
import ml_collections

from pgf_sparsity import config_lib


def get_config(arg=None):
  a = config_lib.parse_arg(arg, **dict(config_lib.SPARSITY_ARGS, ff='1:32', flow='ste', alpha=1e-4),
                           pair='de-en', source='en', target='de', variant='base', steps=100000, batch=256,
                           opt='adafactor', init='', init_format='workdir', **config_lib.T5_ARGS)
  config = ml_collections.ConfigDict()
  config.seed = a.seed
  config.dataset = dict(name='tfds_text', tfds_name=f'wmt14_translate/{a.pair}', tfds_data_dir='',
                        source_language=a.source, target_language=a.target, train_split='train',
                        eval_split='test', vocab=dict(kind='byte', model_path=''), inputs_length=256,
                        targets_length=256, num_train_examples=4_508_785, num_eval_examples=0)
  config.model = config_lib.t5_model(a.variant, dropout=0.1, dtype='bfloat16')
  config.sparsity = config_lib.t5_sparsity_from_args(a, a.alpha)
  config.batch_size = a.batch
  config.total_steps = a.steps
  config.num_epochs = None
  config_lib.set_t5_optimizer(  # T5X fine-tuning: Adafactor at a constant 1e-3
      config, a.opt, adafactor=dict(learning_rate=1e-3, schedule='constant'),
      adamw=config_lib.optimizer(1e-3, warmup_steps=4000, min_learning_rate=1e-5, b2=0.98, eps=1e-9))
  config_lib.set_intervals(config, log_every=100, eval_every=5000, checkpoint_every=5000)
  config.keep_checkpoints = 3
  config_lib.set_t5x_loss(config)
  config.init = dict(path=a.init, format=a.init_format)  # the C4 run's workdir, or Hugging Face T5 weights
  config.label_smoothing = 0.1
  config.beam_size, config.length_penalty = 4, 0.6  # T5's beam search for translation
  config.eval_batch_size = 128
  if a.runlocal:
    config.dataset.update(inputs_length=64, targets_length=32, num_eval_examples=8)
    config_lib.t5_runlocal(config)
  return config_lib.complete(config)
