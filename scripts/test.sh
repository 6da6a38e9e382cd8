#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the whole test suite. Extra arguments go to pytest.
# Two pytest workers (PGF_TEST_WORKERS), one file each at a time: the suite is mostly XLA compilation, which
# runs on one core, so two workers use both cores of a 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q -rs -n "${PGF_TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder "$@" tests
