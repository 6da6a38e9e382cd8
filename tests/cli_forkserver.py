"""Runs many `python -m MODULE ARGS` commands, each in a process of its own, without paying the package's
imports in each (for test_robustness.py's catalogue of bad invocations; not a test itself).

  python tests/cli_forkserver.py CASES_JSON RESULTS_JSON

CASES_JSON holds a list of argument lists (`[MODULE, ARG, ...]`). This process imports what the entry points
import (jax, flax, orbax, the training loop; not TensorFlow, which starts threads) and starts no JAX backend;
each case then runs in a child forked from it: `runpy` runs MODULE as `__main__` with its arguments, as
`python -m` does, with its own exit status, stdout and stderr. Two children run at a time. RESULTS_JSON gets,
per case in order, {returncode, stdout, stderr, seconds}.
"""
import importlib
import json
import os
import runpy
import sys
import tempfile
import threading
import time
import traceback


# What the entry points import, bar themselves (a second import of main.py as __main__ would define its absl
# flags twice) and TensorFlow (its import starts threads).
PREIMPORTED = ('jax', 'flax.linen', 'optax', 'orbax.checkpoint', 'absl.app', 'ml_collections.config_flags',
               'pgf_sparsity.config_lib', 'pgf_sparsity.formats.exporting', 'pgf_sparsity.training.train')


def _preimport() -> None:
  for name in PREIMPORTED:
    importlib.import_module(name)
  assert threading.active_count() == 1, 'a thread before fork: the children would inherit its locks half-held'


def _run_module_as_main(args) -> int:
  """What `python -m` does with a module: its exit status (0, SystemExit's code, 1 after a traceback)."""
  sys.argv = [args[0]] + list(args[1:])
  try:
    runpy.run_module(args[0], run_name='__main__', alter_sys=True)
    return 0
  except SystemExit as e:
    if e.code is None or isinstance(e.code, int):
      return e.code or 0
    print(e.code, file=sys.stderr)
    return 1
  except BaseException:  # pylint: disable=broad-except
    traceback.print_exc()
    return 1


def _start(args, out_path: str, err_path: str) -> int:
  sys.stdout.flush(), sys.stderr.flush()
  pid = os.fork()
  if pid:
    return pid
  for fd, path in ((1, out_path), (2, err_path)):
    os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
  code = _run_module_as_main(args)
  sys.stdout.flush(), sys.stderr.flush()
  os._exit(code)  # no interpreter shutdown: the parent's atexit handlers are not the child's


def _run_all(cases, scratch: str) -> list:
  """Every case, two children at a time; their outputs in order."""
  results, running, pending = [None] * len(cases), {}, list(range(len(cases)))
  while pending or running:
    while pending and len(running) < 2:
      index = pending.pop(0)
      paths = (os.path.join(scratch, f'{index}.out'), os.path.join(scratch, f'{index}.err'))
      running[_start(cases[index], *paths)] = (index, paths, time.time())
    pid, status = os.wait()
    index, (out_path, err_path), started = running.pop(pid)
    with open(out_path) as out, open(err_path) as err:
      results[index] = {'returncode': os.waitstatus_to_exitcode(status), 'stdout': out.read(),
                        'stderr': err.read(), 'seconds': time.time() - started}
  return results


def main(cases_path: str, results_path: str) -> None:
  with open(cases_path) as f:
    cases = json.load(f)
  _preimport()
  with tempfile.TemporaryDirectory(prefix='cli_forkserver_') as scratch:  # the children's stdout and stderr
    results = _run_all(cases, scratch)
  with open(results_path, 'w') as f:
    json.dump(results, f)


if __name__ == '__main__':
  main(*sys.argv[1:])
