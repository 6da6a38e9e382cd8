"""Names the machine and checkout a measurement was taken on, for the benchmarks' result files."""
import os
import platform
import re
import subprocess


def cpu_model() -> str:
  """The CPU's model name, shortened: 'Intel Xeon', 'AMD EPYC 7B13', ..."""
  model = platform.processor() or 'unknown CPU'
  if os.path.exists('/proc/cpuinfo'):
    with open('/proc/cpuinfo') as f:
      names = [line.split(':', 1)[1].strip() for line in f if line.startswith('model name')]
    model = names[0] if names else model
  return re.sub(r'\s+', ' ', re.sub(r'\((R|TM)\)| Processor| CPU @.*| \d+-Core.*', '', model)).strip()


def commit() -> str:
  """The checkout's short commit hash ('unknown' outside git)."""
  done = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True,
                        cwd=os.path.dirname(os.path.abspath(__file__)))
  return done.stdout.strip() or 'unknown'


def hardware() -> str:
  """'2 cores, Intel Xeon'."""
  return f'{os.cpu_count()} cores, {cpu_model()}'


def describe() -> str:
  """'2 cores, Intel Xeon, commit 1a2b3c4'."""
  return f'{hardware()}, commit {commit()}'
