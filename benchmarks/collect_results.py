"""Collect the ``summary.json`` of supervised runs into one table (paper table names).

    python benchmarks/collect_results.py runs/supervised_cpu/* [--out benchmarks/results/supervised_cifar10_cpu.json]

Default output: runs/benchmarks/supervised_cifar10_cpu.json (the committed file changes only with
an explicit ``--out``). Run directories without a ``summary.json`` are an error (exit 2).

Prints, per run: the paper's method name(s) with test accuracy, and for long-tailed runs the
many-shot (> 100 images), medium and few-shot (< 20) class accuracies of the reported inference.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def rows_of(run: Path) -> list[dict]:
    s = json.loads((run / "summary.json").read_text())
    groups = s["test"].get("groups", {})
    rows = []
    for name, acc in s["table"].items():
        inference = s.get("primary", "single")
        for inf, a in s["test"]["accuracy"].items():
            if a == acc:
                inference = inf
                break
        g = groups.get(inference, {})
        rows.append(
            {
                "run": run.name,
                "method": name,
                "test_acc": acc,
                "inference": inference,
                "imbalance_ratio": s.get("imbalance_ratio", 1.0),
                "iterations": s.get("total_iterations"),
                "minutes": round(s.get("elapsed_s", 0) / 60, 1),
                **{f"{k}_acc": v for k, v in g.items()},
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=Path("runs/benchmarks/supervised_cifar10_cpu.json"),
                    help="JSON output path (default: runs/benchmarks/supervised_cifar10_cpu.json)")
    args = ap.parse_args()
    missing = [str(run) for run in args.runs if not (run / "summary.json").is_file()]
    if missing:
        ap.exit(2, f"collect_results.py: error: no summary.json in {', '.join(missing)} (a supervised run that "
                   "finished writes one; run benchmarks/supervised_cifar10_cpu.sh first)\n")
    rows = [r for run in args.runs for r in rows_of(run)]
    print(f"{'run':<22} {'method':<22} {'R':>5} {'test':>7} {'many':>7} {'medium':>7} {'few':>7} {'min':>6}")
    for r in rows:
        grp = [f"{100 * r[k]:7.2f}" if r.get(k) is not None else f"{'-':>7}"
               for k in ("many_acc", "medium_acc", "few_acc")]
        print(f"{r['run']:<22} {r['method']:<22} {r['imbalance_ratio']:>5g} {100 * r['test_acc']:7.2f} "
              f"{' '.join(grp)} {r['minutes']:>6}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
