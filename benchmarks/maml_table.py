"""The MAML-family table (issue 27) from ``benchmarks/maml_omniglot_cpu.sh``'s evaluation JSONs.

Each ``test_<W>way1shot.json`` is one ``fewshot-sla eval --compare`` of the ProtoNet recipe's models
(baseline, SLA) and the MAML family (maml, maml_sla, anil, anil_sla) on the same 1000 test episodes.
Printed per way: every model's reported accuracy (SLA models also SLA+SI), then the paired
differences episode by episode (mean +- 1.96 std/sqrt(n)) of each SLA model against its own
baseline, aggregation's gain (SLA+AG - SLA+SI) and each model against the ProtoNet baseline.

Usage: python benchmarks/maml_table.py EVAL_DIR [--out JSON]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

import numpy as np

Z95 = 1.959963984540054
NAME = re.compile(r"test_(?P<way>\d+)way1shot\.json")
PAIRS = (("sla_s0", "baseline_s0"), ("maml_sla", "maml"), ("anil_sla", "anil"))


def paired(a: list[float], b: list[float]) -> list[float]:
    """Mean and 95% half-width of ``a - b`` (the same episodes)."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return [float(d.mean()), float(Z95 * d.std(ddof=1) / math.sqrt(d.size)) if d.size > 1 else 0.0]


def rows(path: Path) -> dict:
    rep = json.loads(path.read_text())
    models = {Path(m["checkpoint"]).name: m for m in rep["models"]}
    acc = {name: m["results"][m["reported"]]["accuracies"] for name, m in models.items()}
    out = {"way": rep["n_way"], "episodes": rep["episodes"], "file": str(path), "models": {}, "paired": {}}
    for name, m in models.items():
        r = m["results"]
        out["models"][name] = {k: [v["mean"], v["ci95"]] for k, v in r.items()} | {
            "reported": m["reported"], "learner": m.get("learner", "head"), "step": m["step"]}
        if "single" in r and "aggregated" in r:
            out["paired"][f"{name}: AG - SI"] = paired(r["aggregated"]["accuracies"], r["single"]["accuracies"])
    for a, b in PAIRS:
        if a in acc and b in acc:
            out["paired"][f"{a} - {b}"] = paired(acc[a], acc[b])
    base = "baseline_s0"
    for name in acc:
        if name != base and base in acc:
            out["paired"][f"{name} - {base}"] = paired(acc[name], acc[base])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder")
    ap.add_argument("--out", default=None, help="write the table's JSON here (default: FOLDER/maml_table.json)")
    args = ap.parse_args(argv)
    files = sorted(p for p in Path(args.folder).glob("test_*way1shot.json") if NAME.fullmatch(p.name))
    if not files:
        print(f"maml_table.py: error: {args.folder} holds no test_<W>way1shot.json; run "
              "bash benchmarks/maml_omniglot_cpu.sh first", file=sys.stderr)
        return 2
    table = [rows(p) for p in files]
    for t in sorted(table, key=lambda t: t["way"]):
        print(f"\n{t['way']}-way 1-shot, {t['episodes']} episodes")
        for name, m in t["models"].items():
            accs = ", ".join(f"{k} {100 * v[0]:.2f} +- {100 * v[1]:.2f}" for k, v in m.items()
                             if isinstance(v, list))
            print(f"  {name:<12} {m['learner']:<6} {accs}")
        for k, (mean, ci) in t["paired"].items():
            print(f"  {k:<28} {100 * mean:+.2f} +- {100 * ci:.2f}")
    out = Path(args.out) if args.out else Path(args.folder) / "maml_table.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": table}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
