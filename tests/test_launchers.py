"""The pod and cluster launchers' dry runs: the exact commands they would run."""
import subprocess

import pytest

from helpers import ROOT


def _dry_run(script, *args):
  result = subprocess.run(['bash', f'scripts/{script}', '--dry_run', *args], cwd=ROOT, capture_output=True,
                          text=True, check=False)
  return result.returncode, result.stdout, result.stderr


def test_tpu_pod_launcher_ships_the_checkout_and_starts_every_worker():
  code, out, err = _dry_run('launch_tpu_pod.sh', '--tpu=slice', '--zone=us-central2-b', '--project=p',
                            '--workdir=gs://bucket/run', '--config=configs/vit_i1k.py:variant=B/16')
  assert code == 0, err
  archive, scp, ssh = out.strip().splitlines()
  assert archive.startswith('git archive')
  assert 'tpu-vm --zone=us-central2-b --project=p scp' in scp and '--worker=all' in scp
  assert 'ssh slice --worker=all' in ssh
  for part in ('scripts/setup.sh', 'jax\\[tpu\\]==0.10.2', 'PGF_MULTIHOST=1', 'pgf_sparsity.main',
               'configs/vit_i1k.py:variant=B/16', 'gs://bucket/run'):
    assert part in ssh, part


def test_tpu_pod_launcher_refuses_a_local_workdir():
  code, _, err = _dry_run('launch_tpu_pod.sh', '--tpu=s', '--zone=z', '--workdir=/tmp/run', '--config=c.py')
  assert code == 2 and 'gs://' in err


def test_slurm_launcher_one_process_per_gpu_or_per_node():
  code, out, err = _dry_run('launch_slurm.sh', '--nodes=4', '--gpus_per_node=8', '--workdir=/shared/run',
                            '--config=configs/t5_c4.py:variant=large', '--partition=gpu')
  assert code == 0, err
  for line in ('#SBATCH --nodes=4', '#SBATCH --ntasks-per-node=8', '#SBATCH --gpus-per-task=1',
               '#SBATCH --partition=gpu', '#SBATCH --signal=TERM@120', 'export PGF_MULTIHOST=1'):
    assert line in out, line
  assert 'srun --kill-on-bad-exit=1 .venv/bin/python -m pgf_sparsity.main' in out
  assert '(32 processes, 32 GPUs)' in out
  code, out, _ = _dry_run('launch_slurm.sh', '--nodes=2', '--gpus_per_node=8', '--workdir=/w', '--config=c.py',
                          '--per_node', '--', '--config.mesh.fsdp=8')
  assert code == 0 and '#SBATCH --ntasks-per-node=1' in out and '#SBATCH --gpus-per-task=8' in out
  assert '(2 processes, 16 GPUs)' in out and '--config.mesh.fsdp=8' in out


@pytest.mark.parametrize('flag', ['--nodes=0', '--nodes=-2', '--gpus_per_node=0', '--gpus_per_node=two'])
def test_slurm_launcher_refuses_counts_that_are_not_positive(flag):
  code, out, err = _dry_run('launch_slurm.sh', '--workdir=/w', '--config=c.py', flag)
  assert code == 2 and not out and err.count('\n') == 1 and 'must be a positive integer' in err, err
