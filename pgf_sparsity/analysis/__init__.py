"""Measurements of a run: the gradient-noise and mask diagnostics (diagnostics) and FLOPs accounting (flops)."""
