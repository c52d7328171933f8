#!/usr/bin/env bash
# The documented Omniglot results: Conv-4 at 28 px, 5-way 1-shot meta-training on 20 background
# alphabets (5 held out for validation, 5 held out for testing), the same number of steps for
# every method (10 epochs x 75 steps x 4 episodes by default), channels_last; then 1000 test
# episodes at 5-way 1-shot and 20-way 1-shot, with paired differences against the ProtoNet
# baseline on the same episodes, and a table (benchmarks/omniglot_table.py).
# Two lanes of one thread each run side by side (a 2-core machine); each run's wall-clock
# training time is in its summary.json.
# Usage: bash benchmarks/omniglot_cpu.sh [OMNIGLOT_ROOT] [OUT_DIR] [EPOCHS] [RESULT_JSON]
# RESULT_JSON defaults to OUT_DIR/omniglot_cpu.json; the committed benchmarks/results/omniglot_cpu.json
# changes only when it is passed explicitly.
set -euo pipefail
DATA=${1:-../shared/data/omniglot}
OUT=${2:-runs/omniglot_cpu}
EPOCHS=${3:-10}
RESULT=${4:-$OUT/omniglot_cpu.json}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
train=(--data-root "$DATA" --dataset-options val_alphabets=5,test_alphabets=5 --epochs "$EPOCHS"
       --lr-milestones $((EPOCHS / 2)) $((EPOCHS * 3 / 4)) --lr-factors 1.0 0.1 0.01
       --channels-last --num-threads 1 --quiet)
mkdir -p "$OUT"
lane_a() {
  fewshot-sla meta-train --config omniglot_conv4_baseline "${train[@]}" --run-dir "$OUT/protonet_baseline"
  fewshot-sla meta-train --config omniglot_conv4_sla "${train[@]}" --run-dir "$OUT/protonet_sla"
  fewshot-sla meta-train --config omniglot_conv4_sla "${train[@]}" --head ridge --run-dir "$OUT/ridge_sla"
  # the baseline again with 4x the steps (40 epochs by default): as many images through the backbone
  # as an SLA run (M = 4 views of every image)
  fewshot-sla meta-train --config omniglot_conv4_baseline "${train[@]}" --epochs $((EPOCHS * 4)) \
    --lr-milestones $((EPOCHS * 2)) $((EPOCHS * 3)) --run-dir "$OUT/protonet_baseline_long"
}
lane_b() {
  fewshot-sla meta-train --config omniglot_conv4_slasd "${train[@]}" --run-dir "$OUT/protonet_slasd"
  fewshot-sla meta-train --config omniglot_conv4_sla "${train[@]}" --head svm --svm-max-iter 3 --run-dir "$OUT/svm_sla"
}
lane_a > "$OUT/lane_a.log" 2>&1 &
pid_a=$!
lane_b > "$OUT/lane_b.log" 2>&1 &
pid_b=$!
wait $pid_a && wait $pid_b

common=(--split test --episodes 1000 --k-shot 1 --data-root "$DATA" --channels-last --num-threads 1 --quiet)
fewshot-sla eval --checkpoint "$OUT/protonet_baseline" --n-way 5 "${common[@]}" \
  --compare "$OUT/protonet_baseline_long" "$OUT/protonet_sla" "$OUT/protonet_slasd" "$OUT/ridge_sla" "$OUT/svm_sla" \
  --output "$OUT/eval_test_5way1shot.json" > "$OUT/eval_5way.log" 2>&1 &
pid_a=$!
# 20-way: the SVM's 80-way QP (80 support rows x 80 classes = 6,400 dual variables per episode)
# is out of reach of a CPU for 1000 episodes, so ProtoNet and ridge only
fewshot-sla eval --checkpoint "$OUT/protonet_baseline" --n-way 20 "${common[@]}" \
  --compare "$OUT/protonet_baseline_long" "$OUT/protonet_sla" "$OUT/protonet_slasd" "$OUT/ridge_sla" \
  --output "$OUT/eval_test_20way1shot.json" > "$OUT/eval_20way.log" 2>&1 &
pid_b=$!
wait $pid_a && wait $pid_b
cat "$OUT/eval_5way.log" "$OUT/eval_20way.log"
python benchmarks/omniglot_table.py "$OUT" --out "$RESULT"
