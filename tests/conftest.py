"""Shared test setup: quiet TensorFlow, CPU only."""
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# Tests compile far more than they run: XLA's slower-to-compile optimisations cost more than they save here
# (the suite ~20% faster); numerics change at float round-off only. Benchmarks and runs keep them.
os.environ.setdefault('JAX_DISABLE_MOST_OPTIMIZATIONS', '1')
