#!/usr/bin/env bash
# The README's training-way sweep for ProtoNet + SLA on Omniglot (issue: ProtoNet's published numbers
# on a CPU): the recipe of omniglot_conv4_sla_20way (Adam 1e-3, 1-shot episodes with 5 queries,
# the lr halved after 1/3 and 2/3 of the run) with 30-way and 60-way training episodes instead of
# 20-way, each for as many images through the backbone as the 20-way run's 6,000 steps x 480
# (6 epochs of 20,000 / WAY episodes), seed 0, one thread each, two side by side (about an hour each):
#   sla30way_s0: 30-way, 4,002 steps (6 epochs of 667) x 720 images
#   sla60way_s0: 60-way, 1,998 steps (6 epochs of 333) x 1,440 images (WAYS="30 60")
# then each on the 1000 20-way and 5-way 1-shot
# test episodes of benchmarks/omniglot_recipe.sh, paired against that script's seed-0 runs (the
# 20-way SLA run and the plain ProtoNet), and the curves and table (benchmarks/omniglot_runs_table.py).
# Needs omniglot_recipe.sh's folder RECIPE_DIR (s0/: baseline_s0, sla_s0, eval_test_*way1shot.json).
# Usage: bash benchmarks/omniglot_way.sh [OMNIGLOT_ROOT] [RECIPE_DIR] [OUT_DIR] [RESULT_JSON] [PLOT_PNG] [WAYS]
# The defaults write under OUT_DIR; the committed results change only when passed explicitly. A
# finished run or evaluation is kept.
set -euo pipefail
DATA=${1:-../shared/data/omniglot}
RECIPE=${2:-runs/omniglot_recipe}
OUT=${3:-runs/omniglot_way}
RESULT=${4:-$OUT/omniglot_way.json}
PLOT=${5:-$OUT/omniglot_way.png}
WAYS=${6:-30}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
for f in baseline_s0/best.pt sla_s0/best.pt eval_test_20way1shot.json eval_test_5way1shot.json; do
  [ -f "$RECIPE/s0/$f" ] || { echo "omniglot_way.sh: error: $RECIPE/s0/$f is missing; run" \
    "bash benchmarks/omniglot_recipe.sh first" >&2; exit 2; }
done
mkdir -p "$OUT"
train() {  # WAY
  local name=sla$1way_s0
  [ -f "$OUT/$name/summary.json" ] && return
  rm -rf "${OUT:?}/$name"
  fewshot-sla meta-train --config omniglot_conv4_sla_20way --n-way "$1" --episodes-per-epoch $(((20000 + $1 / 2) / $1)) \
    --seed 0 --data-root "$DATA" --num-threads 1 --quiet --run-dir "$OUT/$name" > "$OUT/$name.log" 2>&1
}
runs=() pids=()
for way in $WAYS; do
  runs+=("sla${way}way_s0")
  train "$way" &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done
evals=()
for run in "${runs[@]}"; do
  for way in 20 5; do
    f=$OUT/eval_${run}_${way}way1shot.json
    evals+=("$f")
    [ -f "$f" ] && continue
    fewshot-sla eval --checkpoint "$OUT/$run" --n-way "$way" --k-shot 1 --split test --episodes 1000 \
      --dataset-options rotate_classes=false --channels-last --num-threads 1 --quiet --data-root "$DATA" --output "$f"
  done
done
python benchmarks/omniglot_runs_table.py "$RECIPE"/s0/{baseline_s0,sla_s0} "${runs[@]/#/$OUT/}" \
  --references baseline_s0 sla_s0 --evals "$RECIPE"/s0/eval_test_{20,5}way1shot.json "${evals[@]}" \
  --out "$RESULT" --plot "$PLOT"
