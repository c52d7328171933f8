"""The cross-domain study's table (issue 30) from ``benchmarks/cross_domain_study.sh``'s folder.

Each ``<source>_on_<target>_<K>shot.json`` is one ``fewshot-sla eval --compare`` of a baseline
(first model) and an SLA model (second) on the same 1000 episodes. Printed per row: the baseline's
reported accuracy, the SLA model's SLA+SI (``single``) and SLA+AG (``aggregated``), and the paired
differences episode by episode (mean +- 1.96 std/sqrt(n)): SLA+AG minus the baseline, and
aggregation's own gain (SLA+AG minus SLA+SI of the same model).

Usage: python benchmarks/cross_domain_table.py OUT_DIR [--out JSON]
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
NAME = re.compile(r"(?P<source>\w+?)_on_(?P<target>\w+?)_(?P<shot>\d+)shot\.json")


def paired(a: list[float], b: list[float]) -> tuple[float, float]:
    """Mean and 95% half-width of ``a - b`` (per-episode, the same episodes)."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return float(d.mean()), float(Z95 * d.std(ddof=1) / math.sqrt(d.size)) if d.size > 1 else 0.0


def row(path: Path) -> dict:
    m = NAME.fullmatch(path.name)
    rep = json.loads(path.read_text())
    base, sla = rep["models"][0], rep["models"][1]
    b = base["results"][base["reported"]]
    si, ag = sla["results"]["single"], sla["results"]["aggregated"]
    return {"source": m["source"], "target": m["target"], "shot": int(m["shot"]), "file": str(path),
            "domain": "in-domain" if m["source"] == m["target"] else "cross-domain",
            "baseline": [b["mean"], b["ci95"]], "sla_si": [si["mean"], si["ci95"]], "sla_ag": [ag["mean"], ag["ci95"]],
            "ag_minus_baseline": paired(ag["accuracies"], b["accuracies"]),
            "si_minus_baseline": paired(si["accuracies"], b["accuracies"]),
            "ag_minus_si": paired(ag["accuracies"], si["accuracies"]),
            "features": [base.get("features"), sla.get("features")], "record": rep.get("record")}


def pct(v: list[float] | tuple[float, float]) -> str:
    return f"{100 * v[0]:.2f} +- {100 * v[1]:.2f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("--out", default="", help="JSON of the table (default: FOLDER/cross_domain_table.json)")
    args = ap.parse_args(argv)
    files = sorted(p for p in Path(args.folder).glob("*_on_*shot.json") if NAME.fullmatch(p.name))
    if not files:
        ap.exit(2, f"cross_domain_table.py: error: {args.folder} holds no <source>_on_<target>_<K>shot.json; run "
                "bash benchmarks/cross_domain_study.sh first\n")
    rows = sorted((row(p) for p in files), key=lambda r: (r["source"], r["domain"] != "in-domain", r["target"],
                                                          r["shot"]))
    print("| models | target | 5-way | baseline | SLA+SI | SLA+AG | AG - baseline (paired) | AG - SI (paired) |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['source']} | {r['target']} ({r['domain']}) | {r['shot']}-shot | {pct(r['baseline'])} | "
              f"{pct(r['sla_si'])} | {pct(r['sla_ag'])} | {pct(r['ag_minus_baseline'])} | {pct(r['ag_minus_si'])} |")
    out = Path(args.out) if args.out else Path(args.folder) / "cross_domain_table.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows}, indent=1) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
