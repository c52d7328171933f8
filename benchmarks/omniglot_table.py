"""Table of the Omniglot CPU results written by ``benchmarks/omniglot_cpu.sh``.

    python benchmarks/omniglot_table.py runs/omniglot_cpu [--out benchmarks/results/omniglot_cpu.json]

Reads each run's ``summary.json`` (training steps and wall-clock time, best validation epoch)
and the two ``eval_test_*way1shot.json`` files of ``fewshot-sla eval --compare``; prints one
row per (run, inference) with the 1000-episode test accuracy and its 95% CI at 5-way and 20-way
1-shot, then the paired differences against the first checkpoint (the ProtoNet baseline), and
writes all of it as JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fewshot_sla.stats import paired_difference


def _pct(d: dict | None) -> str:
    return "-" if d is None else f"{100 * d['mean']:.2f} ± {100 * d['ci95']:.2f}"


def collect(out: Path) -> dict:
    evals = {}
    for way in (5, 20):
        f = out / f"eval_test_{way}way1shot.json"
        if f.exists():
            evals[way] = json.loads(f.read_text())
    rows: dict[tuple[str, str], dict] = {}
    for way, ev in evals.items():
        for m in ev["models"]:
            run = _run_name(m["checkpoint"])
            s = json.loads((out / run / "summary.json").read_text())
            for inf, r in m["results"].items():
                row = rows.setdefault((run, inf), {
                    "run": run, "mode": m["mode"], "inference": inf, "reported": inf == m["reported"],
                    "steps": s["steps"], "train_time_min": round(s["train_time_s"] / 60, 1),
                    "best_epoch": s["best"].get("epoch"),
                })
                row[f"test_{way}way"] = {k: r[k] for k in ("mean", "ci95", "std", "n")}
    comparisons = {
        way: [{k: c[k] for k in ("a", "b", "inference_a", "inference_b", "mean", "ci95", "n")}
              for c in ev["comparisons"]]
        for way, ev in evals.items()
    }
    for way, ev in evals.items():  # the SLA runs against the baseline that saw as many images (4x the steps)
        models = {_run_name(m["checkpoint"]): m for m in ev["models"]}
        ref = models.get("protonet_baseline_long")
        if ref is None:
            continue
        for m in models.values():
            if m["mode"] == "baseline":
                continue
            d = paired_difference(m["results"][m["reported"]]["accuracies"], ref["results"]["plain"]["accuracies"])
            comparisons[way].append({"a": m["checkpoint"], "b": ref["checkpoint"], "inference_a": m["reported"],
                                     "inference_b": "plain", **{k: d.as_dict()[k] for k in ("mean", "ci95", "n")}})
    return {"rows": list(rows.values()), "comparisons": comparisons}


def _run_name(checkpoint: str) -> str:
    p = Path(checkpoint)
    return p.parent.name if p.suffix == ".pt" else p.name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="the OUT_DIR of omniglot_cpu.sh")
    ap.add_argument("--out", dest="json_out", type=Path, default=None, help="write the table as JSON here")
    args = ap.parse_args()
    res = collect(args.out)
    if not res["rows"]:
        ap.exit(2, f"omniglot_table.py: error: {args.out} holds no eval_test_5way1shot.json or "
                   f"eval_test_20way1shot.json; run bash benchmarks/omniglot_cpu.sh OMNIGLOT_ROOT {args.out} first\n")
    print("| run | inference | steps | train min | 5-way 1-shot (%) | 20-way 1-shot (%) |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for r in res["rows"]:
        print(f"| {r['run']} | {r['inference']}{' (reported)' if r['reported'] else ''} | {r['steps']} "
              f"| {r['train_time_min']} | {_pct(r.get('test_5way'))} | {_pct(r.get('test_20way'))} |")
    for way, comps in res["comparisons"].items():
        print(f"\npaired differences, {way}-way 1-shot, same 1000 episodes (A - B, points)")
        for c in comps:
            print(f"  {_run_name(c['a'])}:{c['inference_a']} - {_run_name(c['b'])}:{c['inference_b']}: "
                  f"{100 * c['mean']:+.2f} ± {100 * c['ci95']:.2f}")
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(res, indent=1) + "\n")
        print(f"\nwrote {args.json_out}")


if __name__ == "__main__":
    main()
