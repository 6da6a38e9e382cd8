"""Model files in and out: exported N:M models (model_files, nm_packing, tensor_cores), the export of a
run (exporting), and converters from Hugging Face, T5X and big_vision checkpoints (converters). The readers
of model files need numpy alone (no JAX)."""
