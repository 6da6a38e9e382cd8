"""host_memory.keep_freed_memory: repeated executions with large temporaries stop faulting pages in."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A 4096x4096 f32 intermediate (64 MB) is a temporary above glibc's largest mmap threshold (32 MB).
REPEATED_EXECUTIONS = r"""
import resource, sys
from pgf_sparsity import host_memory
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
