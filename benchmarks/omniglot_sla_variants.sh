#!/usr/bin/env bash
# The documented variants of the ProtoNet + SLA recipe on Omniglot (issue: ProtoNet's published numbers
# on a CPU): the main job's recipe (omniglot_conv4_sla_20way: Adam 1e-3, 20-way 1-shot episodes with
# 5 queries, 6,000 steps, the lr halved after 1/3 and 2/3 of the run) with one thing changed, each for
# as many images through the backbone as the main job (6,000 steps x 480), seed 0, one thread each:
#   30way:  30-way episodes, 4,002 steps (6 epochs of 667) x 720 images (sla30way_s0)
#   60way:  60-way episodes, 1,998 steps (6 epochs of 333) x 1,440 images (sla60way_s0)
#           (any NNway works: 6 epochs of 20,000 / NN episodes)
#   ridge:  MetaOptNet's ridge regression head instead of ProtoNet's, its logit scale started at 10
#           (--scale-init; from 1.0, MetaOptNet's, Adam's lr 1e-3 leaves it far below the best scale
#           for the first thousands of steps) (slaridge_s0)
#   NNquery:  NN queries per class, 6 epochs of 480,000 / (80 (1 + NN)) episodes (15query: 375)
#   NNtasks:  NN episodes per step, 6 epochs of 1,000 / NN steps (4tasks: 250 steps of 1,920 images)
#   rotation2: SLA with 2 rotations (0 and 180 degrees; M = 2), 6 epochs of 2,000 steps x 240 images
# EPOCHS=2 (instead of 6) screens the variants on the first third of their run: no lr decay yet,
# 0.96 M images, runs named slaVARIANT_2ep_s0, validation curves only (no test episodes).
# At most PARALLEL (2) runs side by side (about an hour each); then each on the 1000 20-way and
# 5-way 1-shot test episodes of benchmarks/omniglot_recipe.sh, paired against that script's seed-0
# runs (the main job's run and the plain ProtoNet), and the curves and table
# (benchmarks/omniglot_runs_table.py).
# Needs omniglot_recipe.sh's folder RECIPE_DIR (s0/: baseline_s0, sla_s0, eval_test_*way1shot.json).
# Usage: bash benchmarks/omniglot_sla_variants.sh [OMNIGLOT_ROOT] [RECIPE_DIR] [OUT_DIR] [RESULT_JSON] [PLOT_PNG] [VARIANTS]
# The defaults write under OUT_DIR; the committed results change only when passed explicitly. A
# finished run or evaluation is kept.
set -euo pipefail
DATA=${1:-../shared/data/omniglot}
RECIPE=${2:-runs/omniglot_recipe}
OUT=${3:-runs/omniglot_sla_variants}
RESULT=${4:-$OUT/omniglot_sla_variants.json}
PLOT=${5:-$OUT/omniglot_sla_variants.png}
VARIANTS=${6:-30way 60way ridge}
PARALLEL=${PARALLEL:-2}
EPOCHS=${EPOCHS:-6}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
for f in baseline_s0/best.pt sla_s0/best.pt eval_test_20way1shot.json eval_test_5way1shot.json; do
  [ -f "$RECIPE/s0/$f" ] || { echo "omniglot_sla_variants.sh: error: $RECIPE/s0/$f is missing; run" \
    "bash benchmarks/omniglot_recipe.sh first" >&2; exit 2; }
done
suffix=""
[ "$EPOCHS" = 6 ] || suffix=_${EPOCHS}ep
runs=() opts=()
for v in $VARIANTS; do
  case $v in  # each: 480,000 images per epoch, as the main job's 1,000 steps x 480
    [1-9]*way) w=${v%way}; o="--n-way $w --episodes-per-epoch $(((20000 + w / 2) / w))" ;;
    [1-9]*query) q=${v%query}; o="--n-query $q --episodes-per-epoch $(((480000 + 40 * (1 + q)) / (80 * (1 + q))))" ;;
    [1-9]*tasks) t=${v%tasks}; o="--tasks-per-batch $t"
      [ $((1000 % t)) = 0 ] || { echo "omniglot_sla_variants.sh: error: $v: the tasks per step must divide" \
        "the 1,000 episodes of an epoch (e.g. 2tasks, 4tasks, 8tasks)" >&2; exit 2; } ;;
    rotation2) o="--transforms rotation2 --episodes-per-epoch 2000" ;;
    ridge) o="--head ridge --scale-init 10" ;;
    *) echo "omniglot_sla_variants.sh: error: unknown variant '$v'; use NNway, NNquery, NNtasks (e.g. 30way," \
         "15query, 4tasks), rotation2 or ridge" >&2; exit 2 ;;
  esac
  runs+=("sla$v${suffix}_s0")
  opts+=("$o --epochs $EPOCHS")
done
mkdir -p "$OUT"
slot() { while [ "$(jobs -rp | wc -l)" -ge "$PARALLEL" ]; do wait -n; done; }
train() {  # NAME OPTIONS
  [ -f "$OUT/$1/summary.json" ] && return
  rm -rf "${OUT:?}/$1"
  # shellcheck disable=SC2086  # OPTIONS is a list of words
  fewshot-sla meta-train --config omniglot_conv4_sla_20way $2 --seed 0 --data-root "$DATA" --num-threads 1 \
    --quiet --run-dir "$OUT/$1" > "$OUT/$1.log" 2>&1
}
for i in "${!runs[@]}"; do slot; train "${runs[$i]}" "${opts[$i]}" & done
wait
for run in "${runs[@]}"; do
  [ -f "$OUT/$run/summary.json" ] || { echo "omniglot_sla_variants.sh: error: $run did not finish; see" \
    "$OUT/$run.log (a rerun starts it again)" >&2; exit 1; }
done
evals=()
for run in "${runs[@]}"; do
  [ "$EPOCHS" = 6 ] || continue  # a screen: validation curves only
  for way in 20 5; do
    f=$OUT/eval_${run}_${way}way1shot.json
    evals+=("$f")
    [ -f "$f" ] && continue
    slot
    fewshot-sla eval --checkpoint "$OUT/$run" --n-way "$way" --k-shot 1 --split test --episodes 1000 \
      --dataset-options rotate_classes=false --channels-last --num-threads 1 --quiet --data-root "$DATA" \
      --output "$f" &
  done
done
wait
python benchmarks/omniglot_runs_table.py "$RECIPE"/s0/{baseline_s0,sla_s0} "${runs[@]/#/$OUT/}" \
  --references baseline_s0 sla_s0 --evals "$RECIPE"/s0/eval_test_{20,5}way1shot.json "${evals[@]}" \
  --out "$RESULT" --plot "$PLOT"
