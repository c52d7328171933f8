#!/usr/bin/env bash
# Behaviour check of a refactor: fixed-seed runs of the main Omniglot config (2 epochs) and of the
# supervised Conv-4 CPU config (100 iterations, sla+sd) with the code of two checkouts, then a
# comparison of their weights (bit for bit) and metrics rows (time fields aside).
# Usage: bash benchmarks/refactor_check.sh OLD_CHECKOUT NEW_CHECKOUT [DATA_ROOT] [OUT_DIR]
# e.g.   git worktree add /tmp/old <commit> && bash benchmarks/refactor_check.sh /tmp/old . ../shared/data
set -euo pipefail
OLD=$(cd "$1" && pwd); NEW=$(cd "$2" && pwd)
DATA=$(cd "${3:-../shared/data}" && pwd)
OUT=${4:-runs/refactor_check}
mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
export OMP_NUM_THREADS=1
for side in old new; do
  code=$OLD; [ "$side" = new ] && code=$NEW
  rm -rf "$OUT/$side"
  PYTHONPATH=$code python -m fewshot_sla.cli meta-train --config omniglot_conv4_sla --data-root "$DATA/omniglot" \
    --dataset-options val_alphabets=5,test_alphabets=5 --epochs 2 --run-dir "$OUT/$side/meta" --quiet \
    --num-threads 1 --channels-last > "$OUT/$side.meta.log" 2>&1
  # --out-dir/--no-progress: the spellings every version accepts
  PYTHONPATH=$code python -m fewshot_sla.cli supervised --config supervised_cifar10_conv4_cpu --data-root "$DATA" \
    --iterations 100 --eval-every 50 --mode sla+sd --out-dir "$OUT/$side/sup" --no-progress --no-plot \
    > "$OUT/$side.sup.log" 2>&1
done
python "$(dirname "$0")/refactor_compare.py" "$OUT/old/meta" "$OUT/new/meta"
python "$(dirname "$0")/refactor_compare.py" "$OUT/old/sup" "$OUT/new/sup"
