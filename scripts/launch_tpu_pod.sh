#!/usr/bin/env bash
# Runs a config on every worker of a Cloud TPU VM slice (v4, v5e, ...): ships this checkout to all workers,
# sets each up, and starts main.py on all of them at once. Each worker is one JAX process;
# jax.distributed.initialize() (PGF_MULTIHOST=1) finds the slice's coordinator by itself.
#
#   scripts/launch_tpu_pod.sh --tpu=NAME --zone=ZONE [--project=PROJECT] --workdir=gs://BUCKET/run \
#       --config=configs/vit_i1k.py:variant=B/16 [--dry_run] [-- --config.key=value ...]
#
# Create the slice first, e.g. (v4-32: 4 workers x 4 chips; v5e-16: 4 workers x 4 chips):
#   gcloud compute tpus tpu-vm create NAME --zone=us-central2-b --accelerator-type=v4-32 --version=tpu-ubuntu2204-base
#   gcloud compute tpus tpu-vm create NAME --zone=us-west4-a --accelerator-type=v5litepod-16 --version=v2-alpha-tpuv5-lite
# The workdir must be a bucket every worker can write (gs://...). --dry_run prints the commands instead.
set -euo pipefail
cd "$(dirname "$0")/.."
TPU= ZONE= PROJECT= WORKDIR= CONFIG= DRY_RUN=${DRY_RUN:-0}
EXTRA=()
while (($#)); do
  case "$1" in
    --tpu=*) TPU=${1#*=} ;;
    --zone=*) ZONE=${1#*=} ;;
    --project=*) PROJECT=${1#*=} ;;
    --workdir=*) WORKDIR=${1#*=} ;;
    --config=*) CONFIG=${1#*=} ;;
    --dry_run) DRY_RUN=1 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "launch_tpu_pod: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
for required in TPU ZONE WORKDIR CONFIG; do
  [[ -n ${!required} ]] || { echo "launch_tpu_pod: --${required,,} is required" >&2; exit 2; }
done
[[ $WORKDIR == gs://* ]] || { echo "launch_tpu_pod: --workdir must be a gs:// bucket that every worker can write" >&2; exit 2; }

GCLOUD=(gcloud compute tpus tpu-vm --zone="$ZONE")
[[ -n $PROJECT ]] && GCLOUD+=(--project="$PROJECT")
ARCHIVE=/tmp/pgf_sparsity_$$.tar.gz
JAX_VERSION=$(sed -n 's/^jax==\([0-9.]*\)$/\1/p' requirements/lock.txt)
REMOTE="mkdir -p ~/pgf_sparsity && tar xzf ~/pgf_sparsity.tar.gz -C ~/pgf_sparsity && cd ~/pgf_sparsity \
&& bash scripts/setup.sh && .venv/bin/pip install -q 'jax[tpu]==$JAX_VERSION' \
-f https://storage.googleapis.com/jax-releases/libtpu_releases.html \
&& PGF_MULTIHOST=1 .venv/bin/python -m pgf_sparsity.main --config=$CONFIG --workdir=$WORKDIR ${EXTRA[*]:-}"

run() {
  if ((DRY_RUN)); then printf '%q ' "$@"; echo; else "$@"; fi
}
run git archive --format=tar.gz -o "$ARCHIVE" HEAD
run "${GCLOUD[@]}" scp "$ARCHIVE" "$TPU:~/pgf_sparsity.tar.gz" --worker=all
run "${GCLOUD[@]}" ssh "$TPU" --worker=all --command="$REMOTE"
