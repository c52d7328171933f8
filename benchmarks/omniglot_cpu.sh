#!/usr/bin/env bash
# The README's Omniglot results: Conv-4 at 28 px, 5-way 1-shot meta-training on 20 background
# alphabets (5 held out for validation, 5 held out for testing), the same number of steps for
# every method; then 1000 test episodes at 5-way 1-shot and 20-way 1-shot, with paired
# differences against the ProtoNet baseline on the same episodes.
# Usage: bash benchmarks/omniglot_cpu.sh [OMNIGLOT_ROOT] [OUT_DIR] [EPOCHS]
set -euo pipefail
DATA=${1:-../shared/data/omniglot}
OUT=${2:-runs/omniglot_cpu}
EPOCHS=${3:-4}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
train=(--data-root "$DATA" --dataset-options val_alphabets=5,test_alphabets=5 --epochs "$EPOCHS"
       --lr-milestones $((EPOCHS / 2)) $((EPOCHS * 3 / 4)) --lr-factors 1.0 0.1 0.01 --num-threads 1 --quiet)
fewshot-sla meta-train --config omniglot_conv4_baseline "${train[@]}" --run-dir "$OUT/protonet_baseline"
fewshot-sla meta-train --config omniglot_conv4_sla "${train[@]}" --run-dir "$OUT/protonet_sla"
fewshot-sla meta-train --config omniglot_conv4_slasd "${train[@]}" --run-dir "$OUT/protonet_slasd"
fewshot-sla meta-train --config omniglot_conv4_sla "${train[@]}" --head ridge --run-dir "$OUT/ridge_sla"
fewshot-sla meta-train --config omniglot_conv4_sla "${train[@]}" --head svm --svm-max-iter 3 --run-dir "$OUT/svm_sla"
for way in 5 20; do
  fewshot-sla eval --checkpoint "$OUT/protonet_baseline" --split test --episodes 1000 --n-way $way --k-shot 1 \
    --data-root "$DATA" --num-threads 1 --quiet \
    --compare "$OUT/protonet_sla" "$OUT/protonet_slasd" "$OUT/ridge_sla" "$OUT/svm_sla" \
    --output "$OUT/eval_test_${way}way1shot.json"
done
