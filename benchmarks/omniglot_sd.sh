#!/usr/bin/env bash
# The documented Omniglot SLA+SD curves (issue: does self-distillation pay off?): ProtoNet + SLA+SD with
# the recipe of omniglot_conv4_sla_20way for its first 3,000 steps (--epochs 3: the same lr schedule,
# Adam 1e-3 halved at step 2,000), the paper's setting (T = 1, beta = 1, distillation from the first
# step) with training seeds 0 and 1, and --sd-start 0.5 with seed 0; validated every 1,000 steps like
# the recipe's runs (30-40 minutes each, two side by side, one thread each); then each run on the
# 1000 20-way and 5-way 1-shot test episodes of benchmarks/omniglot_recipe.sh, paired against
# that script's runs of the same seed, and the curves and table (benchmarks/omniglot_runs_table.py).
# Needs omniglot_recipe.sh's folder RECIPE_DIR (s0/ and s1/: baseline_s*, sla_s*, eval_test_*way1shot.json).
# Usage: bash benchmarks/omniglot_sd.sh [OMNIGLOT_ROOT] [RECIPE_DIR] [OUT_DIR] [RESULT_JSON] [PLOT_PNG]
# The defaults write under OUT_DIR; the committed results change only when passed explicitly. A
# finished run or evaluation is kept.
set -euo pipefail
DATA=${1:-../shared/data/omniglot}
RECIPE=${2:-runs/omniglot_recipe}
OUT=${3:-runs/omniglot_sd}
RESULT=${4:-$OUT/omniglot_sd.json}
PLOT=${5:-$OUT/omniglot_sd.png}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
for seed in 0 1; do
  for f in baseline_s$seed/best.pt sla_s$seed/best.pt eval_test_20way1shot.json eval_test_5way1shot.json; do
    [ -f "$RECIPE/s$seed/$f" ] || { echo "omniglot_sd.sh: error: $RECIPE/s$seed/$f is missing; run" \
      "bash benchmarks/omniglot_recipe.sh first" >&2; exit 2; }
  done
done
mkdir -p "$OUT"
train() {  # NAME SEED OPTIONS...
  local name=$1 seed=$2; shift 2
  [ -f "$OUT/$name/summary.json" ] && return
  rm -rf "${OUT:?}/$name"
  fewshot-sla meta-train --config omniglot_conv4_sla_20way --mode sla+sd --epochs 3 --seed "$seed" \
    --data-root "$DATA" --num-threads 1 --quiet "$@" --run-dir "$OUT/$name" > "$OUT/$name.log" 2>&1
}
train slasd3000_s0 0 &
pid_a=$!
# the warm-up ablation: the distillation term from step 1,500 on
train slasd3000_start50_s0 0 --sd-start 0.5 &
pid_b=$!
wait $pid_a && wait $pid_b
train slasd3000_s1 1
for run in slasd3000_s0 slasd3000_start50_s0 slasd3000_s1; do
  seed=${run##*_s}
  for way in 20 5; do
    f=$OUT/eval_${run}_${way}way1shot.json
    [ -f "$f" ] && continue
    fewshot-sla eval --checkpoint "$RECIPE/s$seed/baseline_s$seed" --compare "$OUT/$run" --n-way "$way" --k-shot 1 \
      --split test --episodes 1000 --dataset-options rotate_classes=false --channels-last --num-threads 1 --quiet \
      --data-root "$DATA" --output "$f"
  done
done
python benchmarks/omniglot_runs_table.py "$RECIPE"/s0/{baseline_s0,sla_s0} "$OUT"/{slasd3000_s0,slasd3000_start50_s0} \
  "$RECIPE"/s1/{baseline_s1,sla_s1} "$OUT/slasd3000_s1" \
  --evals "$RECIPE"/s0/eval_test_{20,5}way1shot.json "$OUT"/eval_slasd3000_s0_{20,5}way1shot.json \
  "$OUT"/eval_slasd3000_start50_s0_{20,5}way1shot.json "$RECIPE"/s1/eval_test_{20,5}way1shot.json \
  "$OUT"/eval_slasd3000_s1_{20,5}way1shot.json --out "$RESULT" --plot "$PLOT"
