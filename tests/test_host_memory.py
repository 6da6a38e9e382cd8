"""host_memory: with freed memory kept, repeated executions with large temporaries stop faulting pages in;
kept only where JAX will run on the CPU."""
import os
import subprocess
import sys

import pytest

from pgf_sparsity.training import host_memory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A 4096x4096 f32 intermediate (64 MB) is a temporary above glibc's largest mmap threshold (32 MB).
REPEATED_EXECUTIONS = r"""
import resource, sys
from pgf_sparsity.training import host_memory
if sys.argv[1] == 'keep':
  assert host_memory.keep_freed_memory()
import jax, jax.numpy as jnp
f = jax.jit(lambda x: (jnp.tanh(x @ x.T) @ x).sum())
x = jnp.ones((4096, 64)) / 64
f(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
  f(x).block_until_ready()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  out = subprocess.run([sys.executable, '-c', REPEATED_EXECUTIONS, mode], cwd=ROOT, env=env, check=True,
                       capture_output=True, text=True, timeout=120)
  return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc malloc tuning')
def test_kept_memory_stops_per_execution_page_faults():
  pages_per_temporary = 64 * 2**20 // os.sysconf('SC_PAGE_SIZE')
  default = page_faults('default')
  kept = page_faults('keep')
  assert default > 2 * pages_per_temporary  # the default maps and faults the temporary in on every execution
  assert kept < pages_per_temporary // 4  # kept: the heap already holds it


@pytest.mark.parametrize('platforms, expected', [('cpu', True), ('cpu,cuda', True), (' cpu ', True),
                                                 ('cuda', False), ('tpu,cpu', False)])
def test_the_platform_asked_for_decides(monkeypatch, platforms, expected):
  monkeypatch.setenv('JAX_PLATFORMS', platforms)
  assert host_memory.jax_will_run_on_cpu() is expected


def test_without_a_platform_an_installed_accelerator_plugin_decides(monkeypatch):
  monkeypatch.delenv('JAX_PLATFORMS', raising=False)
  monkeypatch.setattr(host_memory.importlib.util, 'find_spec', lambda name: None)
  monkeypatch.setattr(host_memory.importlib.metadata, 'entry_points', lambda group: [])
  assert host_memory.jax_will_run_on_cpu()
  monkeypatch.setattr(host_memory.importlib.metadata, 'entry_points',
                      lambda group: ['jax_cuda12_plugin'] if group == 'jax_plugins' else [])
  assert not host_memory.jax_will_run_on_cpu()
  monkeypatch.setattr(host_memory.importlib.metadata, 'entry_points', lambda group: [])
  monkeypatch.setattr(host_memory.importlib.util, 'find_spec', lambda name: object() if name == 'libtpu' else None)
  assert not host_memory.jax_will_run_on_cpu()


def test_the_entry_points_choice_tunes_only_on_the_cpu(monkeypatch):
  tuned = []
  monkeypatch.setattr(host_memory, 'keep_freed_memory', lambda: tuned.append(True) or True)
  monkeypatch.setenv('JAX_PLATFORMS', 'cuda')
  assert not host_memory.keep_freed_memory_on_cpu() and not tuned
  monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
  assert host_memory.keep_freed_memory_on_cpu() and tuned == [True]
