"""Table of ``benchmarks/omniglot_pretrain.sh``: pretrained backbones (and the meta-trained
ProtoNet + SLA run) solved in the same 1000 Omniglot test episodes.

    python benchmarks/omniglot_pretrain_table.py runs/omniglot_pretrain \
        [--out benchmarks/results/omniglot_pretrain.json]

Reads ``eval_<run>_<way>way_<head>.json`` (one ``fewshot-sla eval`` per run, way and head; the
same seed gives the same episodes) and each run's ``summary.json``; prints the accuracy with its
95% CI per (run, head, inference) at 5-way and 20-way 1-shot, and the paired differences of
each against the meta-trained ProtoNet + SLA run's SLA+AG (A) and against the pretrained
baseline with as many images as SLA, ProtoNet head (B), on the same episodes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fewshot_sla.record import RecordMismatch, check_pairable
from fewshot_sla.stats import paired_difference

RUNS = ("pre_baseline", "pre_baseline_long", "pre_sla", "pre_slasd", "meta_sla", "svm_sla")
REFERENCE = ("meta_sla", "protonet", "aggregated")  # meta-trained ProtoNet + SLA, SLA+AG
BASELINE = ("pre_baseline_long", "protonet", "plain")  # pretrained baseline, as many images as SLA


def _pct(d: dict | None) -> str:
    return "-" if d is None else f"{100 * d['mean']:.2f} ± {100 * d['ci95']:.2f}"


def _minutes(run: Path) -> float | None:
    s = json.loads((run / "summary.json").read_text())
    secs = s.get("train_time_s", s.get("elapsed_s"))
    return None if secs is None else round(secs / 60, 1)


def collect(out: Path) -> dict:
    results: dict = {}
    records: dict[str, list] = {}
    for f in sorted(out.glob("eval_*way_*.json")):
        run, way, head = f.stem[len("eval_"):].rsplit("_", 2)
        ev = json.loads(f.read_text())
        records.setdefault(way, []).append((str(f), ev.get("record")))  # paired within a way: one record
        try:
            check_pairable(records[way])
        except RecordMismatch as e:
            sys.exit(f"error: {e}")
        m = ev["models"][0]
        for inf, r in m["results"].items():
            results[(run, head, inf, int(way[:-3]))] = r
    if not results:
        sys.exit(f"error: {out} holds no eval_<run>_<way>way_<head>.json; run benchmarks/omniglot_pretrain.sh first")
    rows = []
    for run, head, inf in sorted({k[:3] for k in results}, key=lambda k: (RUNS.index(k[0]) if k[0] in RUNS else 9,
                                                                           k[1], k[2])):
        row = {"run": run, "head": head, "inference": inf,
               "train_min": _minutes(out / run) if (out / run / "summary.json").exists() else None}
        for way in (5, 20):
            r = results.get((run, head, inf, way))
            row[f"{way}way"] = None if r is None else {k: r[k] for k in ("mean", "ci95", "n")}
            for name, key in (("reference", REFERENCE), ("baseline", BASELINE)):
                ref = results.get((*key, way))
                if r is not None and ref is not None and (run, head, inf) != key:
                    row[f"{way}way_minus_{name}"] = paired_difference(r["accuracies"], ref["accuracies"]).as_dict()
        rows.append(row)
    return {"reference": "-".join(REFERENCE), "baseline": "-".join(BASELINE), "rows": rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir", type=Path)
    p.add_argument("--out", type=Path, default=None, help="JSON file (default: OUT_DIR/omniglot_pretrain.json)")
    a = p.parse_args(argv)
    if not a.out_dir.is_dir():
        sys.exit(f"error: {a.out_dir} is not a folder; pass the OUT_DIR of benchmarks/omniglot_pretrain.sh")
    table = collect(a.out_dir)
    print(f"| run | head | inference | min | 5-way 1-shot (%) | 20-way 1-shot (%) | 5-way - A | 20-way - A | "
          f"5-way - B | 20-way - B |   (A = {table['reference']}, B = {table['baseline']})")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in table["rows"]:
        diffs = [_pct(r.get(f"{w}way_minus_{n}")) for n in ("reference", "baseline") for w in (5, 20)]
        print(f"| {r['run']} | {r['head']} | {r['inference']} | {r['train_min'] or '-'} | {_pct(r['5way'])} | "
              f"{_pct(r['20way'])} | " + " | ".join(diffs) + " |")
    out = a.out or a.out_dir / "omniglot_pretrain.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(table, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
