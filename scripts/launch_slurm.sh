#!/usr/bin/env bash
# Submits a multi-node GPU run to SLURM: one process per GPU (default) or per node, all joined by
# jax.distributed.initialize(), which reads SLURM's environment (SLURM_JOB_NODELIST, SLURM_NTASKS,
# SLURM_PROCID, SLURM_LOCALID) when PGF_MULTIHOST=1. Run it from a checkout that scripts/setup.sh has set up
# on a filesystem every node sees, with jax[cuda] installed in .venv.
#
#   scripts/launch_slurm.sh --nodes=4 --gpus_per_node=8 --workdir=/shared/runs/t5 \
#       --config=configs/t5_c4.py:variant=large [--per_node] [--partition=P] [--time=48:00:00] \
#       [--dry_run] [-- --config.mesh.fsdp=8 ...]
#
# --dry_run prints the batch script instead of submitting it. A preempted or timed-out job resumes from the
# workdir's newest checkpoint when submitted again (SIGTERM before the kill saves one: --signal=TERM@120).
set -euo pipefail
cd "$(dirname "$0")/.."
NODES=1 GPUS=8 WORKDIR= CONFIG= PARTITION= TIME=24:00:00 PER_NODE=0 DRY_RUN=${DRY_RUN:-0}
EXTRA=()
while (($#)); do
  case "$1" in
    --nodes=*) NODES=${1#*=} ;;
    --gpus_per_node=*) GPUS=${1#*=} ;;
    --workdir=*) WORKDIR=${1#*=} ;;
    --config=*) CONFIG=${1#*=} ;;
    --partition=*) PARTITION=${1#*=} ;;
    --time=*) TIME=${1#*=} ;;
    --per_node) PER_NODE=1 ;;
    --dry_run) DRY_RUN=1 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "launch_slurm: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
[[ -n $WORKDIR && -n $CONFIG ]] || { echo "launch_slurm: --workdir and --config are required" >&2; exit 2; }
for flag in nodes=$NODES gpus_per_node=$GPUS; do
  [[ ${flag#*=} =~ ^[1-9][0-9]*$ ]] || { echo "launch_slurm: --${flag%%=*} must be a positive integer, got '${flag#*=}'" >&2; exit 2; }
done
if ((PER_NODE)); then TASKS=1 GPUS_PER_TASK=$GPUS; else TASKS=$GPUS GPUS_PER_TASK=1; fi

SCRIPT="#!/usr/bin/env bash
#SBATCH --job-name=pgf_sparsity
#SBATCH --nodes=$NODES
#SBATCH --ntasks-per-node=$TASKS
#SBATCH --gpus-per-task=$GPUS_PER_TASK
#SBATCH --time=$TIME
#SBATCH --signal=TERM@120
#SBATCH --output=slurm-%j.out${PARTITION:+
#SBATCH --partition=$PARTITION}
cd $PWD
export PGF_MULTIHOST=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.9
srun --kill-on-bad-exit=1 .venv/bin/python -m pgf_sparsity.main --config=$CONFIG --workdir=$WORKDIR ${EXTRA[*]:-}"

if ((DRY_RUN)); then
  echo "$SCRIPT"
  echo "# would run: sbatch <the script above>  ($((NODES * TASKS)) processes, $((NODES * GPUS)) GPUs)"
else
  sbatch <<<"$SCRIPT"
fi
