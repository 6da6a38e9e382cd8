r"""Fine-tune T5 on a GLUE task as text to text (tfds glue/<task>); eval: exact-match accuracy of greedy
decoding, plus teacher-forced loss and token accuracy.

  .venv/bin/python -m pgf_sparsity.main --config=configs/t5_glue.py:task=sst2,variant=base,ff=1:32 \
      --workdir=workdirs/t5_sst2 --config.dataset.tfds_data_dir=/path/to/tensorflow_datasets

Arguments: task (cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli), variant, recipe, ff, qkv, attn_out,
dec_ff, dec_qkv, dec_attn_out, flow, alpha, dense, finetune, steps, batch, opt (adafactor|adamw), seed,
init (the workdir of a pretraining run, e.g. t5_c4, or with init_format=hf_t5|t5x Hugging Face or T5X T5 v1.1
weights), runlocal (a tiny T5 for 4 steps, e.g. on tfds mock data).
"""
import ml_collections

from pgf_sparsity import config_lib
from pgf_sparsity.tasks import glue_metrics


def get_config(arg=None):
  a = config_lib.parse_arg(arg, **dict(config_lib.SPARSITY_ARGS, ff='1:32', flow='ste', alpha=1e-3),
                           task='sst2', variant='base', steps=20000, batch=128, opt='adafactor', init='',
                           init_format='workdir', **config_lib.T5_ARGS)
  if a.task not in glue_metrics.TASKS:
    raise ValueError(f'Config argument task must be one of {", ".join(glue_metrics.TASKS)}; got {a.task!r}.')
  config = ml_collections.ConfigDict()
  config.seed = a.seed
  eval_split = 'validation_matched' if a.task == 'mnli' else 'validation'
  config.dataset = dict(name='tfds_text', tfds_name=f'glue/{a.task}', tfds_data_dir='', train_split='train',
                        eval_split=eval_split, vocab=dict(kind='byte', model_path=''), inputs_length=512,
                        targets_length=16, num_train_examples=0, num_eval_examples=0)
  config.model = config_lib.t5_model(a.variant, dropout=0.1, dtype='bfloat16')
  config.sparsity = config_lib.t5_sparsity_from_args(a, a.alpha)
  config.batch_size = a.batch
  config.total_steps = a.steps
  config.num_epochs = None
  config_lib.set_t5_optimizer(  # T5X fine-tuning: Adafactor at a constant 1e-3
      config, a.opt, adafactor=dict(learning_rate=1e-3, schedule='constant'),
      adamw=config_lib.optimizer(1e-4, warmup_steps=500, min_learning_rate=1e-6, b2=0.99))
  config_lib.set_intervals(config, log_every=100, eval_every=2000, checkpoint_every=2000)
  config_lib.set_t5x_loss(config)
  config.init = dict(path=a.init, format=a.init_format)  # the C4 run's workdir, or Hugging Face T5 weights
  config.eval_batch_size = 128
  if a.runlocal:
    config.dataset.update(inputs_length=64, num_eval_examples=8)
    config_lib.t5_runlocal(config)
  return config_lib.complete(config)
