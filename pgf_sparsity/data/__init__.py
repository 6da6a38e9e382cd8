"""Input pipelines: in-memory arrays (offline datasets) and tfds (ImageNet and friends)."""
