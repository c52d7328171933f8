#!/usr/bin/env bash
# The documented SLA+SD study on CIFAR-10 (CPU budget: Conv-4, batch 64, config
# supervised_cifar10_conv4_cpu, seed 0 unless said, the test set evaluated at every validation step):
#   at 600 iterations (where SLA+SD loses most): the baseline, SLA+SD with the paper's setting
#   (T = 1, beta = 1, lr 0.1), and one change at a time: --sd-beta 0 and 0.5, --lr 0.05,
#   --sd-temperature 4 and 2, --sd-start 0.5 (the distillation term only after half the run);
#   SLA and the baseline at lr 0.05 too;
#   learning curves to 3,000 iterations (5x), evaluated every 500: the baseline (lr 0.1: seeds 0
#   and 1; lr 0.05), SLA (lr 0.1), SLA+SD (lr 0.1; lr 0.05: seeds 0 and 1);
#   learning curves to 6,000 iterations (10x), evaluated every 500, seeds 0 and 1: the baseline,
#   SLA and SLA+SD, the paper's setting (lr 0.1) for all three, and SLA+SD and the baseline at
#   lr 0.05 (does the short budgets' lr hold at 10x?);
# SLA at 600 iterations and lr 0.1 is in benchmarks/supervised_cifar10_cpu.sh (the same command);
# then the table, the curves' JSON and plot (benchmarks/sd_study_table.py) and the gradient
# diagnosis of the SLA+SD runs (benchmarks/sd_gradients.py). One run after another, one thread:
# about 3 hours for the 600- and 3,000-iteration runs, 7 more for the 6,000-iteration ones.
# Usage: bash benchmarks/sd_study.sh [DATA_ROOT] [OUT_DIR] [RESULT_JSON] [PLOT_PNG] [GRADIENTS_JSON]
# The defaults write under OUT_DIR; the committed results change only when passed explicitly.
set -euo pipefail
DATA=${1:-../shared/data}
OUT=${2:-runs/sd_study}
RESULT=${3:-$OUT/sd_study.json}
PLOT=${4:-$OUT/sd_study.png}
GRADS=${5:-$OUT/sd_gradients.json}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$OUT"
c=(--config supervised_cifar10_conv4_cpu --data-root "$DATA" --cache-dir "$OUT/cache" --quiet
   --num-threads 1 --eval-test)
run() {  # NAME OPTIONS...; seed 0 unless the options say otherwise; a finished run is kept
  local name=$1; shift
  [ -f "$OUT/$name/summary.json" ] && return
  rm -rf "${OUT:?}/$name"
  fewshot-sla supervised "${c[@]}" --seed 0 "$@" --run-dir "$OUT/$name" > "$OUT/$name.log" 2>&1
}
sd=(--mode sla+sd --transforms rotation)
run base600 --mode baseline
run sd600 "${sd[@]}"
run sd600_beta0 "${sd[@]}" --sd-beta 0
run sd600_lr05 "${sd[@]}" --lr 0.05
run sd600_T4 "${sd[@]}" --sd-temperature 4
run sd600_beta05 "${sd[@]}" --sd-beta 0.5
run sd600_T2 "${sd[@]}" --sd-temperature 2
run sd600_start50 "${sd[@]}" --sd-start 0.5
run sla600_lr05 --mode sla --transforms rotation --lr 0.05
run base600_lr05 --mode baseline --lr 0.05
run base3000 --mode baseline --iterations 3000 --eval-every 500
run sd3000 "${sd[@]}" --iterations 3000 --eval-every 500
run sla3000 --mode sla --transforms rotation --iterations 3000 --eval-every 500
run sd3000_lr05 "${sd[@]}" --lr 0.05 --iterations 3000 --eval-every 500
run base3000_s1 --seed 1 --mode baseline --iterations 3000 --eval-every 500
run base3000_lr05 --mode baseline --lr 0.05 --iterations 3000 --eval-every 500
run sd3000_lr05_s1 --seed 1 "${sd[@]}" --lr 0.05 --iterations 3000 --eval-every 500
for seed in 0 1; do
  run base6000_s$seed --seed $seed --mode baseline --iterations 6000 --eval-every 500
  run sla6000_s$seed --seed $seed --mode sla --transforms rotation --iterations 6000 --eval-every 500
  run sd6000_s$seed --seed $seed "${sd[@]}" --iterations 6000 --eval-every 500
  run sd6000_lr05_s$seed --seed $seed "${sd[@]}" --lr 0.05 --iterations 6000 --eval-every 500
  run base6000_lr05_s$seed --seed $seed --mode baseline --lr 0.05 --iterations 6000 --eval-every 500
done
python benchmarks/sd_study_table.py "$OUT" --out "$RESULT" --plot "$PLOT" --plot-iterations 6000 3000
python benchmarks/sd_gradients.py "$OUT"/sd600 "$OUT"/sd600_*/ "$OUT"/sd3000 "$OUT"/sd3000_lr05 \
  "$OUT"/sd6000_*/ --init --out "$GRADS"
