"""Table of the Omniglot CPU results written by ``benchmarks/omniglot_cpu.sh`` (and
``benchmarks/omniglot_recipe.sh``).

    python benchmarks/omniglot_table.py runs/omniglot_cpu [--out benchmarks/results/omniglot_cpu.json]
    python benchmarks/omniglot_table.py runs/omniglot_recipe/s0 runs/omniglot_recipe/s1 [--out JSON]

Reads each run's ``summary.json`` (training steps and wall-clock time, best validation epoch)
and the ``eval_test_{5,20}way{1,5}shot.json`` files of ``fewshot-sla eval --compare`` that
exist (and ``eval_rotated_{5,20}way1shot.json``: rotated characters as classes); prints one
row per (run, inference) with the 1000-episode test accuracy and its 95% CI in each setting,
then the paired differences against the first checkpoint and against ``--reference`` (the
baseline that saw as many images; default ``protonet_baseline_long``), and writes all of it as JSON.
Several folders (one per seed, runs named ``<name>_s<seed>``) add
a ``seeds`` section: per run name, inference and setting, each seed's accuracy, their mean and
spread next to the largest 95% CI, and the same for each folder's paired differences.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from fewshot_sla.record import RecordMismatch, check_pairable
from fewshot_sla.rundir import run_name
from fewshot_sla.stats import paired_difference


def _pct(d: dict | None) -> str:
    return "-" if d is None else f"{100 * d['mean']:.2f} ± {100 * d['ci95']:.2f}"


# (way, shot, file): eval_test_* on the plain test characters; eval_rotated_* on the test characters
# and their rotations as classes (Snell et al.'s protocol, --dataset-options rotate_classes=true)
SETTINGS = ((5, 1, "test"), (20, 1, "test"), (5, 5, "test"), (20, 5, "test"), (5, 1, "rotated"), (20, 1, "rotated"))


def _key(way: int, shot: int, file: str = "test") -> str:
    """The JSON key of a setting: ``5way``/``20way`` for 1-shot (the first table's), else ``5way5shot``;
    ``rotated_`` in front for the rotated-classes protocol."""
    key = f"{way}way" if shot == 1 else f"{way}way{shot}shot"
    return key if file == "test" else f"{file}_{key}"


def collect(out: Path, reference: str = "protonet_baseline_long") -> dict:
    evals = {}
    for way, shot, file in SETTINGS:
        f = out / f"eval_{file}_{way}way{shot}shot.json"
        if f.exists():
            evals[_key(way, shot, file)] = json.loads(f.read_text())
    rows: dict[tuple[str, str], dict] = {}
    for way, ev in evals.items():
        for m in ev["models"]:
            run = run_name(m["checkpoint"])
            s = json.loads((out / run / "summary.json").read_text())
            for inf, r in m["results"].items():
                row = rows.setdefault((run, inf), {
                    "run": run, "mode": m["mode"], "inference": inf, "reported": inf == m["reported"],
                    "steps": s["steps"], "train_time_min": round(s["train_time_s"] / 60, 1),
                    "best_epoch": s["best"].get("epoch"),
                })
                row[f"test_{way}"] = {k: r[k] for k in ("mean", "ci95", "std", "n")}
    comparisons = {
        way: [{k: c[k] for k in ("a", "b", "inference_a", "inference_b", "mean", "ci95", "n")}
              for c in ev["comparisons"]]
        for way, ev in evals.items()
    }
    for way, ev in evals.items():  # the SLA runs against the baseline that saw as many images (4x the steps)
        models = {run_name(m["checkpoint"]): m for m in ev["models"]}
        ref = models.get(reference)
        if ref is None or ref is ev["models"][0]:  # the first checkpoint: eval --compare paired them already
            continue
        for m in models.values():
            if m["mode"] == "baseline":
                continue
            d = paired_difference(m["results"][m["reported"]]["accuracies"], ref["results"]["plain"]["accuracies"])
            comparisons[way].append({"a": m["checkpoint"], "b": ref["checkpoint"], "inference_a": m["reported"],
                                     "inference_b": "plain", **{k: d.as_dict()[k] for k in ("mean", "ci95", "n")}})
    records = {way: (str(out / f"eval_{f}_{w}way{s}shot.json"), ev.get("record"))
               for (w, s, f) in SETTINGS for way, ev in evals.items() if way == _key(w, s, f)}
    return {"rows": list(rows.values()), "comparisons": comparisons, "records": records}


def check_records(results: list[dict]) -> None:
    """Each setting's eval files in all folders (seeds) are on the same episodes of the same data:
    their reproducibility records agree (:func:`fewshot_sla.record.check_pairable`), else one line."""
    by_setting: dict[str, list] = {}
    for res in results:
        for way, named in res.get("records", {}).items():
            by_setting.setdefault(way, []).append(named)
    for named in by_setting.values():
        try:
            check_pairable(named)
        except RecordMismatch as e:
            raise SystemExit(f"omniglot_table.py: error: {e}") from None


def _unseeded(run: str) -> str:
    return re.sub(r"_s\d+$", "", run)


def _spread(values: list[float], ci95: list[float]) -> dict:
    """Mean, spread (max - min; ``None`` for one value) and the largest 95% CI of one number's seeds."""
    return {"values": values, "mean": sum(values) / len(values),
            "spread": max(values) - min(values) if len(values) > 1 else None, "max_ci95": max(ci95)}


def _spread_text(r: dict, fmt: str) -> str:
    vals = " / ".join(format(100 * v, fmt) for v in r["values"])
    if r["spread"] is None:
        return f"{vals} (one seed)"
    return (f"{vals}; mean {format(100 * r['mean'], fmt)}, spread {100 * r['spread']:.2f} "
            f"(CI ± {100 * r['max_ci95']:.2f})")


def across_seeds(results: list[dict]) -> dict:
    """Each (run name without ``_s<seed>``, inference, setting)'s accuracies over the folders, and
    each folder's paired differences grouped the same way (the folders are seeds)."""
    acc: dict[tuple[str, str, str], tuple[list, list]] = {}
    for res in results:
        for r in res["rows"]:
            for key, v in r.items():
                if key.startswith("test_"):
                    vals, cis = acc.setdefault((_unseeded(r["run"]), r["inference"], key[5:]), ([], []))
                    vals.append(v["mean"])
                    cis.append(v["ci95"])
    diffs: dict[tuple[str, str], tuple[list, list]] = {}
    for res in results:
        for way, comps in res["comparisons"].items():
            for c in comps:
                name = (f"{_unseeded(run_name(c['a']))}:{c['inference_a']} - "
                        f"{_unseeded(run_name(c['b']))}:{c['inference_b']}")
                vals, cis = diffs.setdefault((name, way), ([], []))
                vals.append(c["mean"])
                cis.append(c["ci95"])
    return {
        "accuracy": [{"run": r, "inference": i, "setting": w, **_spread(*v)} for (r, i, w), v in acc.items()],
        "paired": [{"difference": d, "setting": w, **_spread(*v)} for (d, w), v in diffs.items()],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, nargs="+",
                    help="the OUT_DIR of omniglot_cpu.sh, or omniglot_recipe.sh's OUT_DIR/s<seed> folders")
    ap.add_argument("--out", dest="json_out", type=Path, default=None, help="write the table as JSON here")
    ap.add_argument("--reference", default="protonet_baseline_long",
                    help="run whose plain inference every SLA run is also paired against")
    args = ap.parse_args()
    results = []
    for out in args.out:
        res = collect(out, args.reference)
        if not res["rows"]:
            ap.exit(2, f"omniglot_table.py: error: {out} holds no eval_test_<W>way<S>shot.json; run bash "
                       f"benchmarks/omniglot_cpu.sh OMNIGLOT_ROOT {out} first\n")
        results.append(res)
    check_records(results)
    res = {"rows": [r for x in results for r in x["rows"]], "comparisons": {}}
    for x in results:
        for way, comps in x["comparisons"].items():
            res["comparisons"].setdefault(way, []).extend(comps)
    if len(results) > 1:
        res["seeds"] = across_seeds(results)
    present = [(w, s, f) for w, s, f in SETTINGS if _key(w, s, f) in res["comparisons"]]
    print("| run | inference | steps | train min | "
          + " | ".join(f"{w}-way {s}-shot{' rotated' if f == 'rotated' else ''} (%)" for w, s, f in present) + " |")
    print("| --- | --- | ---: | ---: |" + " ---: |" * len(present))
    for r in res["rows"]:
        cells = " | ".join(_pct(r.get(f"test_{_key(w, s, f)}")) for w, s, f in present)
        print(f"| {r['run']} | {r['inference']}{' (reported)' if r['reported'] else ''} | {r['steps']} "
              f"| {r['train_time_min']} | {cells} |")
    for way, comps in res["comparisons"].items():
        print(f"\npaired differences, {way} ({'1-shot, ' if 'shot' not in way else ''}same 1000 episodes; "
              "A - B, points)")
        for c in comps:
            print(f"  {run_name(c['a'])}:{c['inference_a']} - {run_name(c['b'])}:{c['inference_b']}: "
                  f"{100 * c['mean']:+.2f} ± {100 * c['ci95']:.2f}")
    if "seeds" in res:
        print("\nacross the folders (seeds): each value, mean, spread (max - min) and the largest 95% CI, points")
        for r in res["seeds"]["accuracy"]:
            print(f"  {r['run']}:{r['inference']} {r['setting']}: {_spread_text(r, '.2f')}")
        for r in res["seeds"]["paired"]:
            print(f"  {r['difference']} {r['setting']}: {_spread_text(r, '+.2f')}")
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(res, indent=1) + "\n")
        print(f"\nwrote {args.json_out}")


if __name__ == "__main__":
    main()
