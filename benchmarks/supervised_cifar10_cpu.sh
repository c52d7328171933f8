#!/usr/bin/env bash
# The documented CPU-sized CIFAR-10 results (standard and long-tailed R = 100), one run after another.
# Usage: bash benchmarks/supervised_cifar10_cpu.sh [DATA_ROOT] [OUT_DIR]
# Then:  python benchmarks/collect_results.py OUT_DIR/std_* OUT_DIR/lt_* [--out JSON]  (prints the table,
#        writes runs/benchmarks/supervised_cifar10_cpu.json unless --out is given)
set -euo pipefail
DATA=${1:-../shared/data}
OUT=${2:-runs/supervised_cpu}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
common=(--data-root "$DATA" --cache-dir "$OUT/cache" --no-progress --seed 0)
std=(--config supervised_cifar10_conv4_cpu "${common[@]}")
lt=(--config supervised_cifar10_lt100_conv4_cpu "${common[@]}")
fewshot-sla supervised "${std[@]}" --mode baseline --out-dir "$OUT/std_baseline"
fewshot-sla supervised "${std[@]}" --mode da --transforms rotation --out-dir "$OUT/std_da"
fewshot-sla supervised "${std[@]}" --mode mt --transforms rotation --out-dir "$OUT/std_mt"
fewshot-sla supervised "${std[@]}" --mode sla --transforms rotation --out-dir "$OUT/std_sla"
fewshot-sla supervised "${std[@]}" --mode sla+sd --transforms rotation --out-dir "$OUT/std_slasd"
fewshot-sla supervised "${lt[@]}" --mode baseline --loss ce --out-dir "$OUT/lt_ce"
fewshot-sla supervised "${lt[@]}" --mode sla+sd --transforms rotation --loss ce --out-dir "$OUT/lt_ce_slasd"
fewshot-sla supervised "${lt[@]}" --mode baseline --loss ldam --drw --out-dir "$OUT/lt_ldamdrw"
fewshot-sla supervised "${lt[@]}" --mode sla+sd --transforms rotation --loss ldam --drw --out-dir "$OUT/lt_ldamdrw_slasd"
