#!/usr/bin/env bash
# The small-scale study of the README's "Reproducing the paper": Fashion-MNIST, the small ViT, every recipe
# at 2:4, 1:8 and 1:32 on the FF layers, 2 seeds, gradient-noise diagnostics every 10 steps.
# Resumable: rerun to finish an interrupted study. About 40 minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${STUDY_ROOT:-workdirs/study}
RECIPES='dense|static|srste,flow=ste|mdgf_linear|mdgf_linear,flow=ste|mdgf_exponential|mdgf_exponential,flow=ste|sdgf_stepwise'
COMMON=(--config=configs/fashion_mnist.py --root="$ROOT" --set=size=small --set=steps=1500
        --set=config.diagnostics_every_steps=10 --set=config.eval_every_steps=500 --parallel=2 --threads=1)
.venv/bin/python scripts/sweep.py "${COMMON[@]}" --grid="recipe=$RECIPES" --grid='ff=2:4|1:8|1:32' \
    --grid='seed=0|1' --csv=results/study_main.csv
# SDGF-geometric multiplies M by 8 in its first frame: 1:32 would need 8:256 groups on width-64 kernels.
.venv/bin/python scripts/sweep.py "${COMMON[@]}" --grid='recipe=sdgf_geometric' --grid='ff=2:4|1:8' \
    --grid='seed=0|1' --csv=results/study_geometric.csv
.venv/bin/python - <<'PY'
import csv
rows = []
for name in ('results/study_main.csv', 'results/study_geometric.csv'):
  with open(name) as f:
    rows += list(csv.DictReader(f))
columns = list(dict.fromkeys(c for r in rows for c in r))
with open('results/study.csv', 'w', newline='') as f:
  w = csv.DictWriter(f, columns)
  w.writeheader()
  w.writerows(rows)
PY
.venv/bin/python scripts/make_tables.py --csv=results/study.csv > results/tables.md
.venv/bin/python scripts/plot.py --csv=results/study.csv --root="$ROOT" --out=results \
    --noise_patterns='ff=2:4,ff=1:32' --schedules --steps=1500 --alpha=0.0043 --pattern=1:8
