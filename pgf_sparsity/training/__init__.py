"""The training loop and what it needs, one job per module, in the order data flows:

  validation     every config key and the workdir checked before any data is loaded
  experiment     model, task, bound recipe, optimizer (optim) and mesh (sharding), built once
  steps          the pure train step, the gradient-noise diagnostic, evaluation; jitted per plan
  train          the loop: train_and_evaluate(config, workdir)
  periodic       logging, evaluation and checkpoints at their intervals (console, metric_writers)
  checkpoints    orbax checkpoints with checksums, preemption; initialise: start from trained weights
  prefetch       batches prepared in a background thread; host_memory: the CPU allocator setting
"""
