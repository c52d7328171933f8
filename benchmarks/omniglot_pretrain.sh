#!/usr/bin/env bash
# The documented "pretraining, then episodes" results on Omniglot (CPU, Conv-4 at 28 px): supervised
# pretraining on the 20 training alphabets of the background set (baseline, SLA, SLA+SD; config
# supervised_omniglot_conv4_cpu; the baseline also with 4x the iterations), the meta-trained
# ProtoNet + SLA and SVM + SLA runs for comparison, then 1000 test episodes on the 5 held-out test
# alphabets at 5-way and 20-way 1-shot with the protonet and logistic heads (the same episodes for
# every run: seed 0), and a table with paired differences (benchmarks/omniglot_pretrain_table.py).
# Usage: bash benchmarks/omniglot_pretrain.sh [OMNIGLOT_ROOT] [OUT_DIR] [RESULT_JSON]
# RESULT_JSON defaults to OUT_DIR/omniglot_pretrain.json; the committed
# benchmarks/results/omniglot_pretrain.json changes only when it is passed explicitly.
set -euo pipefail
DATA=${1:-../shared/data/omniglot}
OUT=${2:-runs/omniglot_pretrain}
RESULT=${3:-$OUT/omniglot_pretrain.json}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$OUT"
opts=(--data-root "$DATA" --num-threads 1 --quiet)
for mode in baseline sla sla+sd; do
  fewshot-sla supervised --config supervised_omniglot_conv4_cpu --mode "$mode" "${opts[@]}" --no-plot \
    --run-dir "$OUT/pre_${mode/+/}"
done
# the baseline again with 4x the iterations: as many images through the backbone as an SLA run (M = 4)
fewshot-sla supervised --config supervised_omniglot_conv4_cpu --mode baseline --iterations 3200 --eval-every 1600 \
  "${opts[@]}" --no-plot --run-dir "$OUT/pre_baseline_long"
fewshot-sla meta-train --config omniglot_conv4_sla --dataset-options val_alphabets=5,test_alphabets=5 \
  --epochs 10 --channels-last "${opts[@]}" --run-dir "$OUT/meta_sla"
# SVM + SLA (the structured QP solver; 3 QP iterations in validation and test, as MetaOptNet)
fewshot-sla meta-train --config omniglot_conv4_sla --dataset-options val_alphabets=5,test_alphabets=5 \
  --epochs 10 --channels-last "${opts[@]}" --head svm --svm-max-iter 3 --run-dir "$OUT/svm_sla"
for way in 5 20; do
  fewshot-sla eval --checkpoint "$OUT/svm_sla" --split test --episodes 1000 --n-way "$way" --k-shot 1 --head svm \
    --channels-last "${opts[@]}" --output "$OUT/eval_svm_sla_${way}way_svm.json"
done
for run in pre_baseline pre_baseline_long pre_sla pre_slasd meta_sla; do
  for way in 5 20; do
    for head in protonet logistic; do
      fewshot-sla eval --checkpoint "$OUT/$run" --split test --episodes 1000 --n-way "$way" --k-shot 1 \
        --head "$head" --channels-last "${opts[@]}" --output "$OUT/eval_${run}_${way}way_${head}.json"
    done
  done
done
python benchmarks/omniglot_pretrain_table.py "$OUT" --out "$RESULT"
