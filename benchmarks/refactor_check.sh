#!/usr/bin/env bash
# Behaviour check of a refactor: fixed-seed runs with the code of two checkouts, then a comparison of
# their weights (bit for bit), metrics rows (time fields aside) and evaluation numbers.
#   meta       the main Omniglot config (omniglot_conv4_sla), 2 epochs
#   sup        the supervised Conv-4 CPU config, sla+sd, 100 iterations
#   ridge/svm  the same Omniglot config with --head ridge / --head svm, 2 epochs of 10 steps
#   sup_resumed    sup stopped after 50 iterations (--stop-after), then --resume: equals sup
#   ridge_resumed  ridge for 1 epoch, then --resume --epochs 2: equals ridge (the lr milestones
#                  count epochs, so the schedule does not depend on --epochs)
#   eval_*.json    `eval` of meta/ridge/svm's best.pt on 20 test episodes: the same per-episode accuracies
#   legacy.pt      logits of tests/data/legacy/*.pt: equal to tests/data/legacy/expected.pt
# Each side's outputs carry a STAMP (the checkout's commit, a hash of its uncommitted changes, a hash
# of run_side below, the data root); a side whose STAMP matches is not run again (FORCE=1 reruns it), so
# the old side is computed once. SIDES="new" runs (or reuses) only that side before the comparison.
# Usage: bash benchmarks/refactor_check.sh OLD_CHECKOUT NEW_CHECKOUT [DATA_ROOT] [OUT_DIR]
# e.g.   git worktree add /tmp/old <commit> && bash benchmarks/refactor_check.sh /tmp/old . ../shared/data
# About 10 minutes per side on one free CPU core. Only option spellings every version accepts.
set -euo pipefail
OLD=$(cd "$1" && pwd); NEW=$(cd "$2" && pwd)
DATA=$(cd "${3:-../shared/data}" && pwd)
OUT=${4:-runs/refactor_check}
mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
export OMP_NUM_THREADS=1

stamp() {  # what a side's outputs were computed from
  local code=$1 dirty
  dirty=$( (git -C "$code" diff HEAD; git -C "$code" status --porcelain --untracked-files=all) 2>&1 | sha256sum | cut -c1-16)
  echo "commit $(git -C "$code" rev-parse HEAD 2>/dev/null || echo none) changes $dirty" \
       "runs $(declare -f run_side | sha256sum | cut -c1-16) data $DATA"
}

run_side() {  # run_side SIDE CODE: every run of one side into $OUT/SIDE
  local side=$1 code=$2 dir=$OUT/$1
  local O="$DATA/omniglot"
  local meta=(python -m fewshot_sla.cli meta-train --config omniglot_conv4_sla --data-root "$O"
              --dataset-options val_alphabets=5,test_alphabets=5 --test-episodes 0 --quiet --num-threads 1)
  local small=(--episodes-per-epoch 40 --val-episodes 20 --log-every 5)
  # --out-dir/--no-progress: the spellings every version accepts
  local sup=(python -m fewshot_sla.cli supervised --config supervised_cifar10_conv4_cpu --data-root "$DATA"
             --iterations 100 --eval-every 50 --mode sla+sd --no-progress --no-plot)
  rm -rf "$dir"; mkdir -p "$dir"
  export PYTHONPATH=$code
  echo "$side: $code"
  "${meta[@]}" --epochs 2 --run-dir "$dir/meta" --channels-last > "$dir/meta.log" 2>&1
  "${sup[@]}" --out-dir "$dir/sup" > "$dir/sup.log" 2>&1
  "${sup[@]}" --out-dir "$dir/sup_resumed" --stop-after 50 > "$dir/sup_resumed.log" 2>&1
  python -m fewshot_sla.cli supervised --resume "$dir/sup_resumed" >> "$dir/sup_resumed.log" 2>&1
  "${meta[@]}" "${small[@]}" --head ridge --epochs 2 --run-dir "$dir/ridge" > "$dir/ridge.log" 2>&1
  "${meta[@]}" "${small[@]}" --head ridge --epochs 1 --run-dir "$dir/ridge_resumed" > "$dir/ridge_resumed.log" 2>&1
  python -m fewshot_sla.cli meta-train --resume "$dir/ridge_resumed" --epochs 2 --quiet \
    >> "$dir/ridge_resumed.log" 2>&1
  "${meta[@]}" "${small[@]}" --head svm --epochs 2 --run-dir "$dir/svm" > "$dir/svm.log" 2>&1
  for run in meta ridge svm; do
    python -m fewshot_sla.cli eval --checkpoint "$dir/$run" --data-root "$O" --episodes 20 --quiet \
      --num-threads 1 --output "$dir/eval_$run.json" > "$dir/eval_$run.log" 2>&1
  done
  python "$HERE/refactor_compare.py" --legacy "$HERE/../tests/data/legacy" "$dir/legacy.pt"
  stamp "$code" > "$dir/STAMP"
  unset PYTHONPATH
}

for side in ${SIDES:-old new}; do
  code=$OLD; [ "$side" = new ] && code=$NEW
  if [ "${FORCE:-0}" != 1 ] && [ -f "$OUT/$side/STAMP" ] && [ "$(cat "$OUT/$side/STAMP")" = "$(stamp "$code")" ]; then
    echo "$side: reusing $OUT/$side ($(cut -d' ' -f2 "$OUT/$side/STAMP" | cut -c1-10))"
  else
    start=$SECONDS; run_side "$side" "$code"; echo "$side: $((SECONDS - start)) s"
  fi
done

for side in old new; do
  [ -f "$OUT/$side/STAMP" ] || { echo "refactor check: $OUT/$side is incomplete (no STAMP); run that side"; exit 1; }
done
status=0
cmp() { python "$HERE/refactor_compare.py" "$@" || status=1; }
for run in meta sup sup_resumed ridge ridge_resumed svm; do cmp "$OUT/old/$run" "$OUT/new/$run"; done
for side in old new; do  # an interrupted run resumed equals the uninterrupted one
  cmp "$OUT/$side/sup_resumed" "$OUT/$side/sup"
  cmp "$OUT/$side/ridge_resumed" "$OUT/$side/ridge"
done
for run in meta ridge svm; do cmp --eval "$OUT/old/eval_$run.json" "$OUT/new/eval_$run.json"; done
cmp --logits "$OUT/old/legacy.pt" "$OUT/new/legacy.pt"
if [ "$status" = 0 ]; then echo "refactor check: identical"; else echo "refactor check: DIFFERENCES (see above)"; fi
exit "$status"
