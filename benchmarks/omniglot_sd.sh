#!/usr/bin/env bash
# The README's Omniglot SLA+SD curves (issue: does self-distillation pay off?): ProtoNet + SLA+SD with
# the recipe of omniglot_conv4_sla_20way for its first 3,000 steps (--epochs 3: the same lr schedule,
# Adam 1e-3 halved at step 2,000), seed 0, the paper's setting (T = 1, beta = 1, distillation from the
# first step), and with --sd-start 0.5, side by side (one thread each), validated every 1,000 steps like
# the recipe's runs (30-40 minutes); then both runs on the 1000 20-way and 5-way 1-shot
# test episodes of benchmarks/omniglot_recipe.sh, paired against
# that script's seed-0 runs, and the curves and table (benchmarks/omniglot_sd_table.py).
# Needs omniglot_recipe.sh's seed-0 folder RECIPE_DIR (baseline_s0, sla_s0, eval_test_*way1shot.json).
# Usage: bash benchmarks/omniglot_sd.sh [OMNIGLOT_ROOT] [RECIPE_DIR] [OUT_DIR] [RESULT_JSON] [PLOT_PNG]
# The defaults write under OUT_DIR; the committed results change only when passed explicitly.
set -euo pipefail
DATA=${1:-../shared/data/omniglot}
RECIPE=${2:-runs/omniglot_recipe/s0}
OUT=${3:-runs/omniglot_sd}
RESULT=${4:-$OUT/omniglot_sd.json}
PLOT=${5:-$OUT/omniglot_sd.png}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
for f in baseline_s0/best.pt sla_s0/best.pt eval_test_20way1shot.json; do
  [ -f "$RECIPE/$f" ] || { echo "omniglot_sd.sh: error: $RECIPE/$f is missing; run" \
    "bash benchmarks/omniglot_recipe.sh first" >&2; exit 2; }
done
mkdir -p "$OUT"
train=(--config omniglot_conv4_sla_20way --mode sla+sd --epochs 3 --seed 0 --data-root "$DATA" --num-threads 1 --quiet)
fewshot-sla meta-train "${train[@]}" --run-dir "$OUT/slasd3000_s0" > "$OUT/slasd3000_s0.log" 2>&1 &
pid_a=$!
# the warm-up ablation: the distillation term from step 1,500 on
fewshot-sla meta-train "${train[@]}" --sd-start 0.5 --run-dir "$OUT/slasd3000_start50_s0" \
  > "$OUT/slasd3000_start50_s0.log" 2>&1 &
pid_b=$!
wait $pid_a && wait $pid_b
for run in slasd3000_s0 slasd3000_start50_s0; do
  for way in 20 5; do
    fewshot-sla eval --checkpoint "$RECIPE/baseline_s0" --compare "$OUT/$run" --n-way "$way" --k-shot 1 \
      --split test --episodes 1000 --dataset-options rotate_classes=false --channels-last --num-threads 1 --quiet \
      --data-root "$DATA" --output "$OUT/eval_${run}_${way}way1shot.json"
  done
done
python benchmarks/omniglot_sd_table.py "$RECIPE/baseline_s0" "$RECIPE/sla_s0" "$OUT/slasd3000_s0" \
  "$OUT/slasd3000_start50_s0" --evals "$RECIPE"/eval_test_{20,5}way1shot.json "$OUT"/eval_slasd3000_s0_{20,5}way1shot.json \
  "$OUT"/eval_slasd3000_start50_s0_{20,5}way1shot.json --out "$RESULT" --plot "$PLOT"
