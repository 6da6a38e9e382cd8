"""Host memory: keep the memory XLA's CPU runtime frees, rather than hand it back to the OS every step.

XLA's CPU runtime allocates an execution's temporaries as one block (hundreds of MB for the default
Fashion-MNIST train step), above glibc's largest mmap threshold (32 MB), so by default every step maps fresh
pages, faults each one in (one page fault per 4 KiB, in system time) and unmaps them at the end. One malloc
arena, no mmap and no trimming keep that block in the heap from one step to the next: the process keeps its
peak heap, which a training process reaches in its first steps anyway.

Only for runs on the CPU: an accelerator's host allocates little per step, and one arena could slow its
many input threads (tf.data), which allocate concurrently. The choice has to be made before JAX starts its
backend (threads keep the arena they first allocate from), so it is made from what JAX will find.
"""
import ctypes
import importlib.metadata
import importlib.util
import os
import sys

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_SETTINGS = (
    (_M_ARENA_MAX, 1),  # other arenas' heaps are capped at 64 MB: a larger block would be mmapped again
    (_M_MMAP_MAX, 0),  # large blocks come from the heap, where freed memory stays mapped
    (_M_TRIM_THRESHOLD, 2**31 - 1),  # never shrink the heap (the largest value mallopt takes)
)


def jax_will_run_on_cpu() -> bool:
  """Whether JAX's default backend will be the CPU, decided before JAX starts one: JAX_PLATFORMS asks for
  the CPU first, or sets nothing and no accelerator plugin (a `jax_plugins` entry point, libtpu) is
  installed."""
  platforms = os.environ.get('JAX_PLATFORMS', '').strip()
  if platforms:
    return platforms.split(',')[0].strip() == 'cpu'
  has_plugin = (bool(importlib.metadata.entry_points(group='jax_plugins'))
                or importlib.util.find_spec('libtpu') is not None)
  return not has_plugin


def keep_freed_memory() -> bool:
  """Tunes this process's malloc as above; call it before JAX starts its backend. True where it took
  effect (Linux with glibc); False, changing nothing, elsewhere."""
  if not sys.platform.startswith('linux'):
    return False
  try:
    mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs on
  except (OSError, AttributeError):
    return False
  return all(mallopt(option, value) == 1 for option, value in _SETTINGS)


def keep_freed_memory_on_cpu() -> bool:
  """keep_freed_memory() where JAX will run on the CPU (the entry point's choice); True where it took effect."""
  return jax_will_run_on_cpu() and keep_freed_memory()
