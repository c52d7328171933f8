"""Speed of a fitted few-shot classifier: ``predict`` from image files, the Python classifier on
preprocessed tensors, and the exported TorchScript / ONNX modules; plus the export file sizes.

A batch of 64 query images (``--batch``) on the CPU; median latency of ``--repeats`` calls after
``--warmup`` ones. Without ``--checkpoint`` the model is a freshly initialised Omniglot-sized one
(Conv-4, 64 filters, 28 px grey, SLA with rotations: speed does not depend on the weights), and
without ``--support`` a 5-way 5-shot support set of synthetic PNGs is written to a temporary folder.

    python benchmarks/export_speed.py                                       # writes runs/export_speed.json
    python benchmarks/export_speed.py --checkpoint runs/omniglot_sla --support my_support
    python benchmarks/export_speed.py --out benchmarks/results/export_speed.json   # a result to commit
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from fewshot_sla.engine.checkpoint import LoadedModel
from fewshot_sla.inferences import episode_table, inferences
from fewshot_sla.meta.config import MetaTrainConfig
from fewshot_sla.meta.model import build_model
from fewshot_sla.predict import FewShotClassifier
from fewshot_sla.predict.export import export_classifier

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from synthetic import synthetic_dataset, write_image_folder  # noqa: E402 - the tests' fixture dataset


def median_s(fn: Callable[[], object], repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(clf: FewShotClassifier, queries: list[Path], tmp: Path, repeats: int, warmup: int,
            has_onnx: bool) -> list[dict]:
    """Rows of latency (and export size) of one fitted classifier on one batch of query files."""
    x = clf.preprocess(queries)
    inference = clf.inference
    with torch.no_grad():
        lat = {"predict (files)": median_s(lambda: clf.predict_proba(queries), repeats, warmup),
               "python (tensors)": median_s(lambda: clf.logits(x), repeats, warmup)}
        sizes = {}
        ts = export_classifier(clf, tmp / f"{inference}.pt", "torchscript")
        m = torch.jit.load(str(ts))
        lat["torchscript"] = median_s(lambda: m(x), repeats, warmup)
        sizes["torchscript"] = ts.stat().st_size
    if has_onnx:
        import onnxruntime as ort

        path = export_classifier(clf, tmp / f"{inference}.onnx", "onnx")
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        xn = x.numpy()
        lat["onnxruntime"] = median_s(lambda: sess.run(None, {"images": xn}), repeats, warmup)
        sizes["onnx"] = path.stat().st_size
    rows = []
    for what, s in lat.items():
        fmt = {"torchscript": "torchscript", "onnxruntime": "onnx"}.get(what)
        rows.append({"inference": inference, "M": clf.M, "what": what, "batch": len(queries),
                     "ms_per_batch": 1000 * s, "images_per_s": len(queries) / s,
                     "file_bytes": sizes.get(fmt) if fmt else None})
    return rows


def untrained(mode: str, image_size: int) -> LoadedModel:
    cfg = MetaTrainConfig(dataset="omniglot", backbone="conv4", head="protonet", mode=mode, transforms="rotation",
                          image_size=image_size)
    model = build_model(cfg, 1, image_size).eval()
    data = {"channels": 1, "image_size": image_size, "mean": (0.08,), "std": (0.26,), "dataset": "omniglot"}
    return LoadedModel(model, cfg, "meta", data, {}, "(untrained conv4, omniglot-sized)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=None, help="a run directory or .pt (default: an untrained conv4)")
    p.add_argument("--support", default=None, help="support folder (default: 5-way 5-shot synthetic PNGs)")
    p.add_argument("--mode", default="sla+sd", help="mode of the untrained model (without --checkpoint)")
    p.add_argument("--image-size", type=int, default=28, help="image size of the untrained model")
    p.add_argument("--inferences", nargs="+", default=None, help="default: every one the checkpoint supports")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--out", default="runs/export_speed.json")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    has_onnx = all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime"))

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        loaded = untrained(a.mode, a.image_size) if a.checkpoint is None else None
        probe = FewShotClassifier(loaded) if loaded else FewShotClassifier.from_checkpoint(a.checkpoint)
        size, ch = probe.spec.image_size, probe.spec.channels
        support = a.support
        if support is None:
            write_image_folder(tmp, {"support": synthetic_dataset(5, 5, size, ch, seed=0)})
            support = tmp / "support"
        write_image_folder(tmp, {"query": synthetic_dataset(8, a.batch // 8 + 1, size, ch, seed=1)})
        queries = sorted((tmp / "query").rglob("*.png"))[: a.batch]
        rows = []
        for inference in a.inferences or inferences(episode_table(probe.pipeline), probe.mode):
            clf = (FewShotClassifier(loaded, inference) if loaded
                   else FewShotClassifier.from_checkpoint(a.checkpoint, inference=inference)).fit(support)
            rows += measure(clf, queries, tmp, a.repeats, a.warmup, has_onnx)

    print(f"{'inference':<11} {'M':>2} {'what':<17} {'ms/batch':>9} {'images/s':>9} {'file KiB':>9}")
    for r in rows:
        kib = f"{r['file_bytes'] / 1024:.0f}" if r["file_bytes"] else "-"
        print(f"{r['inference']:<11} {r['M']:>2} {r['what']:<17} {r['ms_per_batch']:>9.2f} {r['images_per_s']:>9.0f} "
              f"{kib:>9}")
    env = {"torch": torch.__version__, "python": platform.python_version(), "threads": torch.get_num_threads(),
           "checkpoint": a.checkpoint or "untrained conv4", "machine": platform.machine(),
           "onnxruntime": importlib.import_module("onnxruntime").__version__ if has_onnx else None}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"env": env, "rows": rows}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
