#!/usr/bin/env bash
# Issue 30's cross-domain study: does SLA's gain survive a change of domain, and does aggregation
# help more or less there than in-domain? Every evaluation is 1000 episodes (seed 0, 15 queries),
# 5-way 1-shot and 5-way 5-shot, the baseline paired with the SLA model on the same episodes
# (eval --compare), features cached (one backbone pass per image and view).
#   Omniglot main-job models (benchmarks/omniglot_recipe.sh: baseline_s0 = plain ProtoNet, Snell et
#   al.'s recipe; sla_s0 = ProtoNet + SLA): in-domain on the 5 held-out Omniglot alphabets, and on
#   Fashion-MNIST's 10,000 test images (grey 28 px).
#   Supervised CIFAR-10 models (benchmarks/supervised_cifar10_cpu.sh: std_baseline, std_sla; features
#   solved by ProtoNet): on CIFAR-10's test images (the 10 training classes: not novel, so
#   --allow-overlap), on Fashion-MNIST, and on the same 5 held-out Omniglot alphabets.
# Usage: bash benchmarks/cross_domain_study.sh OMNIGLOT_RUNS SUPERVISED_RUNS OMNIGLOT_ROOT FASHION_ROOT CIFAR_ROOT OUT
#   then: python benchmarks/cross_domain_table.py OUT [--out JSON]
set -euo pipefail
OMNI_RUNS=${1:-runs/omniglot_recipe/s0}
SUP_RUNS=${2:-runs/supervised_cpu}
OMNI=${3:-data/omniglot}
FASHION=${4:-/usr/share/datasets/fashion-mnist}
CIFAR=${5:-data}
OUT=${6:-runs/cross_domain}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$OUT"
common=(--episodes 1000 --seed 0 --n-query 15 --n-way 5 --num-threads 1 --quiet)
alphabets=val_alphabets=5,test_alphabets=5
run() {  # NAME SHOT ARGS...: one paired evaluation, skipped when its JSON exists
  local name=$1 shot=$2; shift 2
  [ -f "$OUT/$name.json" ] && return 0
  fewshot-sla eval "${common[@]}" --k-shot "$shot" --output "$OUT/$name.json" "$@" > "$OUT/$name.log" 2>&1
}
for shot in 1 5; do
  om=(--checkpoint "$OMNI_RUNS/baseline_s0" --compare "$OMNI_RUNS/sla_s0")
  run "omniglot_on_omniglot_${shot}shot" "$shot" "${om[@]}" --split test --data-root "$OMNI" \
    --dataset-options rotate_classes=false
  run "omniglot_on_fashion_${shot}shot" "$shot" "${om[@]}" --dataset fashion-mnist --data-root "$FASHION" --split test
  sup=(--checkpoint "$SUP_RUNS/std_baseline" --compare "$SUP_RUNS/std_sla")
  run "cifar10_on_cifar10_${shot}shot" "$shot" "${sup[@]}" --split test --data-root "$CIFAR" --allow-overlap
  run "cifar10_on_fashion_${shot}shot" "$shot" "${sup[@]}" --dataset fashion-mnist --data-root "$FASHION" --split test
  run "cifar10_on_omniglot_${shot}shot" "$shot" "${sup[@]}" --dataset omniglot --data-root "$OMNI" --split test \
    --dataset-options "$alphabets"
done
