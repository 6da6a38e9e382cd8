#!/usr/bin/env bash
# Study v2, as pre-registered in the README ("Study v2"). Every part is resumable (rerun to finish it) and
# can run alone, on other days, from the same commit:
#   bash scripts/run_study_v2.sh vision      # Fashion-MNIST, small ViT, 1,500 steps: 7 recipes x 1:8, 1:32,
#                                            # 1:64 x 4 seeds, dense and SDGF-geometric (1:8) x 4 seeds
#   bash scripts/run_study_v2.sh isoflops    # 1:32 and dense at 750 and 3,000 steps, 2 seeds
#   bash scripts/run_study_v2.sh long        # closer to convergence: 1:32 at 3,000 steps, seeds 2 and 3 (with
#                                            # isoflops' seeds 0 and 1, 4 seeds), dense at 3,000 and 6,000
#   bash scripts/run_study_v2.sh converge    # near convergence: 1:32 at 12,000 steps x 4 seeds, dense at 12,000
#                                            # and 24,000 steps x 2 seeds (log points 4x sparser than above),
#                                            # then 1:8 and 1:64 at 12,000 steps x 4 seeds
#   bash scripts/run_study_v2.sh secondary   # the secondary recipes at 12,000 steps x 4 seeds (MDGF-Linear and
#                                            # MDGF-Exponential ste at 1:8, 1:32, 1:64; SDGF-geometric at 1:8)
#   bash scripts/run_study_v2.sh language    # tiny T5 on Shakespeare, 1,000 steps: 4 recipes x 2:4, 1:8,
#                                            # 1:32 x 3 seeds, and dense x 3 seeds
#   bash scripts/run_study_v2.sh tables      # results/study_v2/*.csv -> tables, findings, figures
# Runs go to $STUDY_ROOT (default workdirs/study_v2); the CSVs and each run's curves (traces/) to
# $STUDY_OUT (default results/study_v2/). PARALLEL (default 2) runs at a time, one CPU thread each.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${STUDY_ROOT:-workdirs/study_v2}
OUT=${STUDY_OUT:-results/study_v2}
PARALLEL=${PARALLEL:-2}
SWEEP=(.venv/bin/python scripts/sweep.py --parallel="$PARALLEL" --threads=1)
# run names repeat across the vision and language roots: one traces directory per root
VISION_MODEL=(--config=configs/fashion_mnist.py --root="$ROOT/vision" --traces="$OUT/traces/vision" --set=size=small)
VISION=("${VISION_MODEL[@]}" --set=config.diagnostics_every_steps=50 --set=config.eval_every_steps=250)
# the 12,000-step runs (converge, secondary): log points 4x sparser, so that traces stay small
CONVERGE=("${VISION_MODEL[@]}" --set=config.diagnostics_every_steps=200 --set=config.eval_every_steps=500)
SPARSE='static|srste,flow=ste|mdgf_linear|mdgf_exponential|mdgf_exponential,flow=ste|sdgf_stepwise'
SEEDS4='seed=0|1|2|3'

case "${1:-}" in
  vision)
    "${SWEEP[@]}" "${VISION[@]}" --set=steps=1500 --grid=recipe=dense --grid="$SEEDS4" --csv="$OUT/vision_dense.csv"
    "${SWEEP[@]}" "${VISION[@]}" --set=steps=1500 --grid="recipe=$SPARSE" --grid='ff=1:8|1:32|1:64' \
        --grid="$SEEDS4" --csv="$OUT/vision_sparse.csv"
    # SDGF-geometric multiplies M by 8 in its first frame: only 1:8 (8:64) fits the width-64 kernels.
    "${SWEEP[@]}" "${VISION[@]}" --set=steps=1500 --grid=recipe=sdgf_geometric --grid=ff=1:8 --grid="$SEEDS4" \
        --csv="$OUT/vision_geometric.csv" ;;
  isoflops)
    "${SWEEP[@]}" "${VISION[@]}" --grid='steps=750|3000' --grid=recipe=dense --grid='seed=0|1' \
        --csv="$OUT/isoflops_dense.csv"
    "${SWEEP[@]}" "${VISION[@]}" --grid='steps=750|3000' --grid='recipe=static|srste,flow=ste|mdgf_exponential|sdgf_stepwise' \
        --grid=ff=1:32 --grid='seed=0|1' --csv="$OUT/isoflops_sparse.csv" ;;
  long)
    "${SWEEP[@]}" "${VISION[@]}" --grid="recipe=static|srste,flow=ste|mdgf_exponential|sdgf_stepwise" --grid=ff=1:32 \
        --grid=steps=3000 --grid='seed=2|3' --csv="$OUT/vision_long_sparse.csv"
    "${SWEEP[@]}" "${VISION[@]}" --grid='steps=3000|6000' --grid=recipe=dense --grid='seed=2|3' \
        --csv="$OUT/vision_long_dense.csv" ;;
  converge)
    "${SWEEP[@]}" "${CONVERGE[@]}" --grid=steps=12000 --grid=recipe=dense --grid='seed=0|1' --csv="$OUT/vision_12k_dense.csv"
    "${SWEEP[@]}" "${CONVERGE[@]}" --grid="recipe=static|srste,flow=ste|mdgf_exponential|sdgf_stepwise" --grid=ff=1:32 \
        --grid=steps=12000 --grid="$SEEDS4" --csv="$OUT/vision_12k_sparse.csv"
    "${SWEEP[@]}" "${CONVERGE[@]}" --grid=steps=24000 --grid=recipe=dense --grid='seed=0|1' --csv="$OUT/vision_24k_dense.csv"
    # the other pre-registered patterns at the length where dense converged
    "${SWEEP[@]}" "${CONVERGE[@]}" --grid="recipe=static|srste,flow=ste|mdgf_exponential|sdgf_stepwise" \
        --grid='ff=1:8|1:64' --grid=steps=12000 --grid="$SEEDS4" --csv="$OUT/vision_12k_sparse_1to8_1to64.csv" ;;
  secondary)
    "${SWEEP[@]}" "${CONVERGE[@]}" --grid='recipe=mdgf_linear|mdgf_exponential,flow=ste' --grid='ff=1:8|1:32|1:64' \
        --grid=steps=12000 --grid="$SEEDS4" --csv="$OUT/vision_12k_secondary.csv"
    "${SWEEP[@]}" "${CONVERGE[@]}" --grid=recipe=sdgf_geometric --grid=ff=1:8 --grid=steps=12000 --grid="$SEEDS4" \
        --csv="$OUT/vision_12k_geometric.csv" ;;
  language)
    LANGUAGE=(--config=configs/t5_shakespeare.py --root="$ROOT/language" --traces="$OUT/traces/language" --set=steps=1000
              --set=config.diagnostics_every_steps=100)
    "${SWEEP[@]}" "${LANGUAGE[@]}" --grid=recipe=dense --grid='seed=0|1|2' --csv="$OUT/language_dense.csv"
    # the pre-registered patterns first, then 2:4
    "${SWEEP[@]}" "${LANGUAGE[@]}" --grid='recipe=static|srste,flow=ste|mdgf_exponential|sdgf_stepwise' \
        --grid='ff=1:8|1:32' --grid='seed=0|1|2' --csv="$OUT/language_sparse.csv"
    "${SWEEP[@]}" "${LANGUAGE[@]}" --grid='recipe=static|srste,flow=ste|mdgf_exponential|sdgf_stepwise' \
        --grid='ff=2:4' --grid='seed=0|1|2' --csv="$OUT/language_sparse_2to4.csv" ;;
  tables)
    VISION_CSVS=(--csv="$OUT/vision_dense.csv" --csv="$OUT/vision_sparse.csv" --csv="$OUT/vision_geometric.csv")
    ISO_CSVS=(--csv="$OUT/isoflops_dense.csv" --csv="$OUT/isoflops_sparse.csv")
    LONG_CSVS=("${ISO_CSVS[@]}" --csv="$OUT/vision_long_dense.csv" --csv="$OUT/vision_long_sparse.csv")
    # every vision run, for dense accuracy by run length and the iso-FLOPs interpolation at 1:32
    CONVERGE_CSVS=("${VISION_CSVS[@]}" "${LONG_CSVS[@]}" --csv="$OUT/vision_12k_dense.csv"
                   --csv="$OUT/vision_12k_sparse.csv" --csv="$OUT/vision_24k_dense.csv"
                   --csv="$OUT/vision_12k_sparse_1to8_1to64.csv" --csv="$OUT/vision_12k_secondary.csv"
                   --csv="$OUT/vision_12k_geometric.csv")
    LANGUAGE_CSVS=(--csv="$OUT/language_dense.csv" --csv="$OUT/language_sparse.csv"
                   --csv="$OUT/language_sparse_2to4.csv")
    existing() { for a in "$@"; do [[ -f "${a#--csv=}" ]] && echo "$a"; done; }
    mapfile -t VISION_CSVS < <(existing "${VISION_CSVS[@]}")
    mapfile -t ISO_CSVS < <(existing "${ISO_CSVS[@]}")
    mapfile -t LONG_CSVS < <(existing "${LONG_CSVS[@]}")
    mapfile -t CONVERGE_CSVS < <(existing "${CONVERGE_CSVS[@]}")
    mapfile -t LANGUAGE_CSVS < <(existing "${LANGUAGE_CSVS[@]}")
    TABLES=(.venv/bin/python scripts/make_tables.py)
    {
      echo '## Vision (Fashion-MNIST)'; echo
      "${TABLES[@]}" "${VISION_CSVS[@]}" "${ISO_CSVS[@]}" --traces="$OUT/traces/vision"
      if (( ${#LONG_CSVS[@]} > ${#ISO_CSVS[@]} )); then
        echo; echo '## Vision at 3,000 steps (1:32)'; echo
        "${TABLES[@]}" "${LONG_CSVS[@]}" --traces="$OUT/traces/vision"
      fi
      if (( ${#CONVERGE_CSVS[@]} > ${#VISION_CSVS[@]} + ${#LONG_CSVS[@]} )); then
        echo; echo '## Vision at 12,000 steps (near convergence)'; echo
        "${TABLES[@]}" "${CONVERGE_CSVS[@]}" --steps=12000 --traces="$OUT/traces/vision"
      fi
      if (( ${#LANGUAGE_CSVS[@]} )); then
        echo; echo '## Language (Shakespeare, held-out plays)'; echo
        "${TABLES[@]}" "${LANGUAGE_CSVS[@]}" --metric=loss --traces="$OUT/traces/language"
      fi
    } > "$OUT/tables.md"
    {
      echo '**Vision** (Fashion-MNIST, exact N:M test accuracy):'; echo
      "${TABLES[@]}" "${VISION_CSVS[@]}" --findings
      if (( ${#LONG_CSVS[@]} > ${#ISO_CSVS[@]} )); then
        echo; echo '**Vision at 3,000 steps** (1:32, closer to convergence; the same comparisons):'; echo
        "${TABLES[@]}" "${LONG_CSVS[@]}" --findings
      fi
      if (( ${#CONVERGE_CSVS[@]} > ${#VISION_CSVS[@]} + ${#LONG_CSVS[@]} )); then
        echo; echo '**Vision at 12,000 steps** (the length at which dense converged, tables; the same comparisons):'; echo
        "${TABLES[@]}" "${CONVERGE_CSVS[@]}" --steps=12000 --findings
      fi
      if (( ${#LANGUAGE_CSVS[@]} )); then
        echo; echo '**Language** (Shakespeare, held-out loss of the exact N:M model):'; echo
        "${TABLES[@]}" "${LANGUAGE_CSVS[@]}" --metric=loss --findings
      fi
      echo; echo -n '**The whole study:** '
      "${TABLES[@]}" "${CONVERGE_CSVS[@]}" "${LANGUAGE_CSVS[@]}" --hours  # CONVERGE_CSVS: every vision CSV
    } > "$OUT/findings.md"
    {
      echo 'Vision (Fashion-MNIST, exact N:M test accuracy, %):'; echo
      "${TABLES[@]}" "${CONVERGE_CSVS[@]}" --steps=12000 --summary
      if (( ${#LANGUAGE_CSVS[@]} )); then
        echo; echo 'Language (Shakespeare, held-out loss; lower is better):'; echo
        "${TABLES[@]}" "${LANGUAGE_CSVS[@]}" --metric=loss --summary
      fi
    } > "$OUT/summary.md"
    .venv/bin/python scripts/plot.py "${VISION_CSVS[@]}" "${ISO_CSVS[@]}" --traces="$OUT/traces/vision" --out="$OUT/vision" \
        --noise_patterns='ff=1:8,ff=1:32,ff=1:64' --curves_pattern=ff=1:32
    .venv/bin/python scripts/plot.py "${CONVERGE_CSVS[@]}" --length_pattern=ff=1:32 --out="$OUT/vision"
    if (( ${#LANGUAGE_CSVS[@]} )); then
      .venv/bin/python scripts/plot.py "${LANGUAGE_CSVS[@]}" --traces="$OUT/traces/language" --out="$OUT/language" \
          --noise_patterns='ff=2:4,ff=1:8,ff=1:32' --curves_pattern=ff=1:32
    fi ;;
  *)
    echo "usage: $0 vision|isoflops|long|converge|secondary|language|tables" >&2; exit 2 ;;
esac
