"""Inference from the packed N:M form: a C++ kernel through jax.ffi (kernel.py, nm_matmul.cc) that reads only
the kept values and their in-group positions, and the Flax layers' path through it (packed_layers.py)."""
