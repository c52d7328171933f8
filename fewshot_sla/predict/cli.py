"""Subcommands ``predict`` and ``export`` of the ``fewshot-sla`` command.

Examples::

    fewshot-sla predict --checkpoint runs/omniglot_sla --support my_support --query my_queries \\
        --output preds.csv
    fewshot-sla export --checkpoint runs/omniglot_sla --support my_support --format torchscript \\
        --output classifier.pt

``--support DIR`` holds one subfolder per class (shots may differ); ``--query`` takes image files
and folders (searched recursively). When a query folder has one subfolder per support class,
``predict`` also prints the accuracy.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

import torch

__all__ = ["add_parser", "run_predict", "run_export", "query_labels", "prediction_rows", "write_rows"]

_CHUNK = 256  # query images read and classified at a time


def _classifier(args: argparse.Namespace) -> Any:
    from .classifier import FewShotClassifier

    options = None
    if args.head_options:
        from ..config import parse_options

        options = parse_options(args.head_options, "--head-options")
    clf = FewShotClassifier.from_checkpoint(args.checkpoint, device=args.device, inference=args.inference,
                                            head=args.head, head_options=options, batch_size=args.batch_size)
    return clf.fit(args.support, skip_bad=args.skip_bad)


def query_labels(paths: list[Path], roots: list[str], classes: list[Any]) -> list[str | None]:
    """The class of each query image given by its folder: ``ROOT/<class>/.../image`` for a query
    folder ROOT, when ``<class>`` is a support class (else ``None``)."""
    names = {str(c) for c in classes}
    dirs = [Path(r) for r in roots if Path(r).is_dir()]
    out: list[str | None] = []
    for p in paths:
        label = None
        for d in dirs:
            try:
                parts = p.relative_to(d).parts
            except ValueError:
                continue
            if len(parts) >= 2 and parts[0] in names:
                label = parts[0]
            break
        out.append(label)
    return out


def prediction_rows(paths: list[Path], probs: torch.Tensor, classes: list[Any]) -> list[dict[str, Any]]:
    """One row per query: ``path``, ``prediction``, ``confidence``, then one probability per class."""
    rows = []
    for p, pr in zip(paths, probs.tolist()):
        best = max(range(len(pr)), key=pr.__getitem__)
        row: dict[str, Any] = {"path": str(p), "prediction": str(classes[best]), "confidence": pr[best]}
        row.update({str(c): v for c, v in zip(classes, pr)})
        rows.append(row)
    return rows


def write_rows(path: Path, rows: list[dict[str, Any]], info: dict[str, Any]) -> None:
    """``.csv``: the rows; ``.json``: ``info`` with the rows under ``predictions``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".csv":
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    else:
        path.write_text(json.dumps({**info, "predictions": rows}, indent=1) + "\n", encoding="utf-8")


def _check_output(output: str | None, suffixes: tuple[str, ...], option: str = "--output") -> Path | None:
    if output is None:
        return None
    p = Path(output)
    if p.suffix.lower() not in suffixes:
        raise ValueError(f"{option} {output}: unknown file type; end the name with {' or '.join(suffixes)}")
    return p


def _table(rows: list[dict[str, Any]], truth: list[str | None]) -> str:
    width = min(60, max(len(r["path"]) for r in rows))
    head = f"{'path':<{width}}  {'prediction':<20} {'confidence':>10}"
    show_truth = any(t is not None for t in truth)
    lines = [head + ("  truth" if show_truth else "")]
    for r, t in zip(rows, truth):
        p = r["path"] if len(r["path"]) <= width else "..." + r["path"][-(width - 3):]
        line = f"{p:<{width}}  {r['prediction']:<20} {r['confidence']:>10.4f}"
        if show_truth:
            line += f"  {t if t is not None else '-'}" + ("" if t is None or t == r["prediction"] else "  (wrong)")
        lines.append(line)
    return "\n".join(lines)


def run_predict(args: argparse.Namespace) -> int:
    from .preprocess import list_images, normalise
    from .support import load_pixels

    output = _check_output(args.output, (".csv", ".json"))
    paths = list_images(args.query, what="query")
    clf = _classifier(args)
    kept: list[Path] = []
    probs = []
    for start in range(0, len(paths), _CHUNK):
        chunk = paths[start:start + _CHUNK]
        pixels, ok = load_pixels(chunk, clf.spec, args.skip_bad)
        if pixels:
            probs.append(torch.softmax(clf.logits(normalise(torch.stack(pixels), clf.spec)), dim=-1))
            kept += [chunk[i] for i in ok]
    if not kept:
        raise ValueError("no query image could be read; pass readable image files")
    p = torch.cat(probs)
    rows = prediction_rows(kept, p, clf.classes_)
    truth = query_labels(kept, args.query, clf.classes_)
    if not args.quiet:
        print(_table(rows, truth))
    shots = ", ".join(f"{c}: {k}" for c, k in zip(clf.classes_, clf.shots_))
    print(f"{len(rows)} queries, {clf.n_way} classes ({shots}); inference {clf.inference}, head {clf.head_name}")
    info: dict[str, Any] = {"checkpoint": str(args.checkpoint), "support": str(args.support),
                            "inference": clf.inference, "head": clf.head_name,
                            "classes": [str(c) for c in clf.classes_], "shots": clf.shots_}
    if all(t is not None for t in truth):
        correct = sum(r["prediction"] == t for r, t in zip(rows, truth))
        info["accuracy"] = correct / len(rows)
        print(f"accuracy: {100 * info['accuracy']:.2f}% ({correct}/{len(rows)}; labels from the query subfolders)")
    if output is not None:
        write_rows(output, rows, info)
        print(f"wrote {output}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from .export import export_classifier

    suffix = {"torchscript": (".pt", ".pth", ".ts"), "backbone": (".pt", ".pth", ".ts"), "onnx": (".onnx",)}
    output = _check_output(args.output, suffix[args.format])
    if args.format == "onnx":
        from .export import _onnx_modules

        _onnx_modules()  # fail before loading anything
    clf = _classifier(args)
    export_classifier(clf, output, args.format, pixels=args.input == "pixels")
    size = output.stat().st_size
    what = "embedding network" if args.format == "backbone" else (
        f"{clf.n_way}-way classifier (inference {clf.inference}, head {clf.head_name})")
    print(f"wrote {output} ({size / 2**20:.2f} MiB): {args.format} {what}; classes {', '.join(map(str, clf.classes_))}")
    c, n = clf.spec.channels, clf.spec.image_size
    if args.input == "pixels":
        print("input: uint8 [B, H, W] or [B, H, W, C] raw pixels of any size (converted inside the module)")
    else:
        print(f"input: float32 [B, {c}, {n}, {n}] from fewshot_sla.predict.preprocess_images (spec in the file's "
              "metadata)")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, metavar="RUN",
                   help="a run directory (its best.pt) or a .pt checkpoint of meta-train or supervised")
    p.add_argument("--support", required=True, metavar="DIR",
                   help="support images: one subfolder per class, one or more images each (shots may differ)")
    p.add_argument("--inference", default=None, choices=("plain", "single", "aggregated", "distilled"),
                   help="default: the one the checkpoint reports (meta: aggregated for sla, distilled for sla+sd; "
                   "supervised: aggregated when trained with SLA, else plain)")
    p.add_argument("--head", default=None,
                   help="few-shot head solving the support set (default: the checkpoint's head; supervised: protonet)")
    p.add_argument("--head-options", default=None, metavar="KEY=VALUE,...",
                   help="options of --head, e.g. lambda_reg=50 (ridge) or C_reg=0.1,max_iter=15 (svm)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i] (default cpu)")
    p.add_argument("--batch-size", type=int, default=64, help="images per backbone call (default 64)")
    p.add_argument("--skip-bad", action="store_true",
                   help="skip unreadable image files with a warning instead of stopping")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``predict`` and ``export`` on the ``fewshot-sla`` parser."""
    p = subparsers.add_parser(
        "predict", help="classify your own images with a trained checkpoint and a support folder",
        description="Fit a trained checkpoint's few-shot classifier to a support folder (one subfolder per "
        "class) and classify query images; prints a table (and the accuracy when the query folder has one "
        "subfolder per support class) and writes CSV/JSON with one probability column per class.",
    )
    _common(p)
    p.add_argument("--query", required=True, nargs="+", metavar="PATH",
                   help="query image files and/or folders (searched recursively)")
    p.add_argument("--output", default=None, metavar="FILE", help="write the predictions to FILE (.csv or .json)")
    p.add_argument("--quiet", action="store_true", help="print only the summary (and accuracy), not the table")
    p.set_defaults(func=run_predict)

    e = subparsers.add_parser(
        "export", help="export a checkpoint fitted to a support folder as a TorchScript or ONNX classifier",
        description="Bake a support folder into a standalone module: preprocessed images [B, C, S, S] -> class "
        "probabilities [B, N], with the SLA transforms and aggregation (or the distilled head) inside. "
        "--format backbone exports the embedding network alone.",
    )
    _common(e)
    e.add_argument("--format", default="torchscript", choices=("torchscript", "onnx", "backbone"),
                   help="torchscript (torch.jit.load), onnx (needs pip install onnx onnxscript) or backbone")
    e.add_argument("--input", default="tensors", choices=("tensors", "pixels"),
                   help="tensors: preprocessed float32 [B, C, S, S] (default); pixels: raw uint8 [B, H, W(, C)] of "
                   "any size, converted inside the module (TorchScript only)")
    e.add_argument("--output", required=True, metavar="FILE", help="the file to write (.pt for TorchScript, .onnx)")
    e.set_defaults(func=run_export)
