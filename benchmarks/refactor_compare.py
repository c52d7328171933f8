"""Compare the outputs of two versions of the code (benchmarks/refactor_check.sh). Exit status 1
when anything differs.

    python benchmarks/refactor_compare.py RUN_A RUN_B          # two run directories: last.pt/best.pt
        weights and optimiser state bit for bit, metrics.jsonl rows with their time fields removed
        (summary.json is reported, not judged: its layout may change)
    python benchmarks/refactor_compare.py --eval A.json B.json  # two `eval --output` files: every
        model's results (per-episode accuracies included) and the paired comparisons
    python benchmarks/refactor_compare.py --logits A.pt B.pt    # two files of tensors, bit for bit
    python benchmarks/refactor_compare.py --legacy DIR OUT.pt   # with the code on PYTHONPATH: the logits
        of DIR/meta_v1.pt and DIR/supervised_v1.pt on DIR/expected.pt's inputs, saved to OUT.pt and
        compared with the logits stored in expected.pt
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

_TIME_KEYS = {"time", "elapsed_s", "seconds", "train_time_s", "train_time"}


def _drop(obj: Any, keys: set[str]) -> Any:
    """``obj`` without the dictionary entries named in ``keys``, at any depth."""
    if isinstance(obj, dict):
        return {k: _drop(v, keys) for k, v in obj.items() if k not in keys}
    if isinstance(obj, list):
        return [_drop(v, keys) for v in obj]
    return obj


def _equal(a: Any, b: Any) -> bool:
    """Bit-for-bit equality of nested tensors, dicts, lists and plain values."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype \
            and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


def _rows(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return _drop(rows, _TIME_KEYS)


def _first_difference(ra: list[dict], rb: list[dict]) -> str:
    for i, (x, y) in enumerate(zip(ra, rb)):
        if x != y:
            keys = sorted(k for k in x.keys() | y.keys() if x.get(k, "<absent>") != y.get(k, "<absent>"))
            return f"row {i + 1}: " + ", ".join(f"{k} {x.get(k, '<absent>')} vs {y.get(k, '<absent>')}" for k in keys)
    return f"{len(ra)} vs {len(rb)} rows"


def compare_runs(a: Path, b: Path) -> bool:
    ok = True
    label = f"{a.parent.name}/{a.name} vs {b.parent.name}/{b.name}"
    for name in ("last.pt", "best.pt"):
        ca = torch.load(a / name, map_location="cpu", weights_only=False)
        cb = torch.load(b / name, map_location="cpu", weights_only=False)
        same = _equal(ca["model"], cb["model"])
        line = f"{label} {name}: weights identical: {same} ({len(ca['model'])} tensors)"
        if "optimizer" in ca and "optimizer" in cb:
            same_opt = _equal(ca["optimizer"]["state"], cb["optimizer"]["state"])
            line += f", optimiser state identical: {same_opt}"
            same &= same_opt
        print(line)
        ok &= same
    ra, rb = _rows(a), _rows(b)
    same_rows = ra == rb
    print(f"{label} metrics.jsonl: {len(ra)} vs {len(rb)} rows, identical: {same_rows}"
          + ("" if same_rows else f" (first difference: {_first_difference(ra, rb)})"))
    sa, sb = (a / "summary.json", b / "summary.json")
    if sa.exists() and sb.exists():  # reported only: paths, times and the layout may differ
        da = _drop(json.loads(sa.read_text()), _TIME_KEYS | {"run_dir"})
        db = _drop(json.loads(sb.read_text()), _TIME_KEYS | {"run_dir"})
        differ = sorted(k for k in da.keys() | db.keys() if da.get(k) != db.get(k))
        print(f"{label} summary.json (not judged): " + (f"differs in {differ}" if differ else "identical"))
    return ok and same_rows


def compare_evals(a: Path, b: Path) -> bool:
    ja, jb = json.loads(a.read_text()), json.loads(b.read_text())
    ma, mb = ja["models"], jb["models"]
    same = len(ma) == len(mb) and all(_equal(x["results"], y["results"]) for x, y in zip(ma, mb))
    same &= _equal(_drop(ja.get("comparisons"), {"a", "b"}), _drop(jb.get("comparisons"), {"a", "b"}))  # a, b: paths
    for key in ("split", "episodes", "n_query", "seed", "n_way", "k_shot", "classes", "images"):
        same &= ja.get(key) == jb.get(key)
    n = sum(len(r["accuracies"]) for m in ma for r in m["results"].values())
    print(f"{a.name}: {len(ma)} model(s), {n} per-episode accuracies, identical: {same}")
    return same


def compare_logits(a: Path, b: Path) -> bool:
    same = _equal(torch.load(a, weights_only=False), torch.load(b, weights_only=False))
    print(f"{a.name}: logits identical: {same}")
    return same


def legacy_logits(folder: Path, out: Path) -> bool:
    """The logits of the legacy checkpoints with the code on PYTHONPATH; compared with expected.pt."""
    from fewshot_sla.engine import load_model

    exp = torch.load(folder / "expected.pt")
    meta, sup = load_model(folder / "meta_v1.pt"), load_model(folder / "supervised_v1.pt")
    with torch.no_grad():
        logits = {"meta_logits": meta.model(exp["support"], exp["labels"], exp["query"], 3),
                  "supervised": dict(sup.model(exp["x"]))}
    torch.save(logits, out)
    same = _equal(logits["meta_logits"], exp["meta_logits"]) and _equal(logits["supervised"], exp["supervised"])
    print(f"{folder.name}: logits of meta_v1.pt and supervised_v1.pt equal expected.pt: {same}")
    return same


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("--eval", "--logits", "--legacy"):
        fn = {"--eval": compare_evals, "--logits": compare_logits, "--legacy": legacy_logits}[argv[0]]
        ok = fn(*(Path(p) for p in argv[1:]))
    else:
        ok = compare_runs(*(Path(p) for p in argv))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
