#!/usr/bin/env bash
# The README's Omniglot recipe results (issue: ProtoNet's published numbers on a CPU): Conv-4 at
# 28 px on the background set (20 alphabets for training, 5 for validation, 5 held out for the
# test), each run about an hour on one core:
#   sla_s<seed>:      ProtoNet + SLA, config omniglot_conv4_sla_20way (Adam, 20-way episodes, 6,000 steps)
#   baseline_s<seed>: plain ProtoNet with Snell et al.'s recipe, config omniglot_conv4_baseline_60way
#                     (Adam, 60-way episodes, rotated characters as extra classes, 8,000 steps:
#                     as many images through the backbone as the SLA run)
# The two run side by side (one thread each, a 2-core machine), one seed after another; then
# 1000 test episodes (seed 0, 15 queries) at 5-/20-way 1-/5-shot on the plain test classes
# (--dataset-options rotate_classes=false) with paired differences against baseline_s<first seed>,
# and the table (benchmarks/omniglot_table.py).
# Usage: bash benchmarks/omniglot_recipe.sh [OMNIGLOT_ROOT] [OUT_DIR] [RESULT_JSON] [SEEDS]
# RESULT_JSON defaults to OUT_DIR/omniglot_recipe.json; SEEDS to "0" (e.g. "0 1").
set -euo pipefail
DATA=${1:-../shared/data/omniglot}
OUT=${2:-runs/omniglot_recipe}
RESULT=${3:-$OUT/omniglot_recipe.json}
SEEDS=${4:-0}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$OUT"
opts=(--data-root "$DATA" --num-threads 1 --quiet)
runs=()
for seed in $SEEDS; do
  fewshot-sla meta-train --config omniglot_conv4_sla_20way "${opts[@]}" --seed "$seed" \
    --run-dir "$OUT/sla_s$seed" > "$OUT/sla_s$seed.log" 2>&1 &
  pid_a=$!
  fewshot-sla meta-train --config omniglot_conv4_baseline_60way "${opts[@]}" --seed "$seed" \
    --run-dir "$OUT/baseline_s$seed" > "$OUT/baseline_s$seed.log" 2>&1 &
  pid_b=$!
  wait $pid_a && wait $pid_b
  runs+=("$OUT/baseline_s$seed" "$OUT/sla_s$seed")
done
first=${runs[0]}
common=(--split test --episodes 1000 --dataset-options rotate_classes=false --channels-last
        --num-threads 1 --quiet --data-root "$DATA")
evaluate() {  # WAY SHOT
  fewshot-sla eval --checkpoint "$first" --compare "${runs[@]:1}" --n-way "$1" --k-shot "$2" "${common[@]}" \
    --output "$OUT/eval_test_$1way$2shot.json" > "$OUT/eval_$1way$2shot.log" 2>&1
}
(evaluate 20 1; evaluate 5 1) &
pid_a=$!
(evaluate 20 5; evaluate 5 5) &
pid_b=$!
wait $pid_a && wait $pid_b
cat "$OUT"/eval_*shot.log
python benchmarks/omniglot_table.py "$OUT" --reference "$(basename "$first")" --out "$RESULT"
