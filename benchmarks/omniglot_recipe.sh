#!/usr/bin/env bash
# The documented Omniglot recipe results (issue: ProtoNet's published numbers on a CPU): Conv-4 at
# 28 px on the background set (20 alphabets for training, 5 for validation, 5 held out for the
# test), each run about an hour on one core:
#   sla_s<seed>:      ProtoNet + SLA, config omniglot_conv4_sla_20way (Adam, 20-way episodes, 6,000 steps)
#   baseline_s<seed>: plain ProtoNet with Snell et al.'s recipe, config omniglot_conv4_baseline_60way
#                     (Adam, 60-way episodes, rotated characters as extra classes, 8,000 steps:
#                     as many images through the backbone as the SLA run)
# Per seed, in OUT_DIR/s<seed>: the two run side by side (one thread each, a 2-core machine), then
# 1000 test episodes (seed 0, 15 queries) at 5-/20-way 1-/5-shot on the plain test classes
# (--dataset-options rotate_classes=false), paired against baseline_s<seed>; then the table over
# the seeds (benchmarks/omniglot_table.py). Each seed's two models are also tested at 5-/20-way
# 1-shot with the rotated test characters as classes (Snell et al.'s protocol).
# Usage: bash benchmarks/omniglot_recipe.sh [OMNIGLOT_ROOT] [OUT_DIR] [RESULT_JSON] [SEEDS]
# RESULT_JSON defaults to OUT_DIR/omniglot_recipe.json; SEEDS to "0 1". A seed whose six
# evaluations exist is kept.
set -euo pipefail
DATA=${1:-../shared/data/omniglot}
OUT=${2:-runs/omniglot_recipe}
RESULT=${3:-$OUT/omniglot_recipe.json}
SEEDS=${4:-"0 1"}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
opts=(--data-root "$DATA" --num-threads 1 --quiet)
common=(--split test --episodes 1000 --dataset-options rotate_classes=false --channels-last
        --num-threads 1 --quiet --data-root "$DATA")
evaluate() {  # WAY SHOT, of the seed's folder $dir
  fewshot-sla eval --checkpoint "$dir/baseline_s$seed" --compare "$dir/sla_s$seed" --n-way "$1" --k-shot "$2" \
    "${common[@]}" --output "$dir/eval_test_$1way$2shot.json" > "$dir/eval_$1way$2shot.log" 2>&1
}
rotated() {  # WAY SHOT: Snell et al.'s test protocol, the test characters and their rotations by 90,
  # 180 and 270 degrees as classes (4 x as many classes)
  fewshot-sla eval --checkpoint "$dir/baseline_s$seed" --compare "$dir/sla_s$seed" --n-way "$1" --k-shot "$2" \
    "${common[@]/rotate_classes=false/rotate_classes=true}" --output "$dir/eval_rotated_$1way$2shot.json" \
    > "$dir/eval_rotated_$1way$2shot.log" 2>&1
}
folders=()
for seed in $SEEDS; do
  dir=$OUT/s$seed
  folders+=("$dir")
  [ -f "$dir/eval_test_20way5shot.json" ] && [ -f "$dir/eval_test_5way5shot.json" ] &&
    [ -f "$dir/eval_test_20way1shot.json" ] && [ -f "$dir/eval_test_5way1shot.json" ] &&
    [ -f "$dir/eval_rotated_20way1shot.json" ] && [ -f "$dir/eval_rotated_5way1shot.json" ] && continue
  mkdir -p "$dir"
  fewshot-sla meta-train --config omniglot_conv4_sla_20way "${opts[@]}" --seed "$seed" \
    --run-dir "$dir/sla_s$seed" > "$dir/sla_s$seed.log" 2>&1 &
  pid_a=$!
  fewshot-sla meta-train --config omniglot_conv4_baseline_60way "${opts[@]}" --seed "$seed" \
    --run-dir "$dir/baseline_s$seed" > "$dir/baseline_s$seed.log" 2>&1 &
  pid_b=$!
  wait $pid_a && wait $pid_b
  (evaluate 20 1; evaluate 5 1; rotated 20 1) &
  pid_a=$!
  (evaluate 20 5; evaluate 5 5; rotated 5 1) &
  pid_b=$!
  wait $pid_a && wait $pid_b
  cat "$dir"/eval_*shot.log
done
python benchmarks/omniglot_table.py "${folders[@]}" --out "$RESULT"
