"""Compare two run directories: ``last.pt``/``best.pt`` weights bit for bit and ``metrics.jsonl``
rows with their time fields removed. Exit status 1 when anything differs.

    python benchmarks/refactor_compare.py RUN_A RUN_B
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch


def _rows(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [{k: v for k, v in r.items() if k not in ("time", "elapsed_s")} for r in rows]


def main(argv: list[str]) -> int:
    a, b = (Path(p) for p in argv)
    ok = True
    for name in ("last.pt", "best.pt"):
        sa = torch.load(a / name, map_location="cpu", weights_only=False)["model"]
        sb = torch.load(b / name, map_location="cpu", weights_only=False)["model"]
        same = sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
        print(f"{a.name} {name}: weights identical: {same} ({len(sa)} tensors)")
        ok &= same
    ra, rb = _rows(a), _rows(b)
    print(f"{a.name} metrics.jsonl: {len(ra)} vs {len(rb)} rows, identical: {ra == rb}")
    return 0 if ok and ra == rb else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
