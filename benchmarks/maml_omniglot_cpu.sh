#!/usr/bin/env bash
# Issue 27's CPU results: MAML, MAML + SLA, ANIL and ANIL + SLA on Omniglot (Finn et al.'s strided
# Conv-4, 28 px, 5-way 1-shot training, the configs maml_omniglot_conv4_cpu / _sla_cpu: equal images),
# the four trained side by side (one thread each), then tested on the ProtoNet recipe's 1000 test
# episodes (held-out alphabets, seed 0) at 5- and 20-way 1-shot, paired with the recipe's seed-0
# models (benchmarks/omniglot_recipe.sh) in one eval --compare per way.
# Usage: bash benchmarks/maml_omniglot_cpu.sh [OMNIGLOT_ROOT] [RECIPE_SEED0_DIR] [OUT_DIR]
#   then: python benchmarks/maml_table.py OUT_DIR/eval [--out JSON]
set -euo pipefail
DATA=${1:-data/omniglot}
RECIPE=${2:-runs/omniglot_recipe/s0}
OUT=${3:-runs/maml_omniglot_cpu}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$OUT/eval"
train() {  # NAME ARGS...: one run, kept when its summary exists
  local name=$1; shift
  [ -f "$OUT/$name/summary.json" ] && return 0
  fewshot-sla meta-train "$@" --data-root "$DATA" --num-threads 1 --quiet --run-dir "$OUT/$name" \
    > "$OUT/$name.log" 2>&1
}
train maml --config maml_omniglot_conv4_cpu &
train maml_sla --config maml_omniglot_conv4_sla_cpu &
train anil --config maml_omniglot_conv4_cpu --learner anil &
train anil_sla --config maml_omniglot_conv4_sla_cpu --learner anil &
wait
for way in 5 20; do
  fewshot-sla eval --checkpoint "$RECIPE/baseline_s0" --compare "$RECIPE/sla_s0" "$OUT/maml" "$OUT/maml_sla" \
    "$OUT/anil" "$OUT/anil_sla" --n-way "$way" --k-shot 1 --split test --episodes 1000 \
    --dataset-options rotate_classes=false --channels-last --num-threads 1 --quiet --data-root "$DATA" \
    --output "$OUT/eval/test_${way}way1shot.json" > "$OUT/eval/test_${way}way1shot.log" 2>&1
done
