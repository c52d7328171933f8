"""Subcommands ``predict`` and ``export`` of the ``fewshot-sla`` command::

    fewshot-sla predict --checkpoint RUN --support my_support --query my_queries --output preds.csv
"""

from __future__ import annotations

import argparse
import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..cli_options import command, option
from ..config import ConfigError, build_config, parse_options
from ..writable import check_writable_file, writing

__all__ = ["ClassifierOptions", "PredictOptions", "ExportOptions", "run_predict", "run_export", "query_labels",
           "prediction_rows", "write_rows"]

_CHUNK = 256  # query images read and classified at a time


@dataclass(kw_only=True)
class ClassifierOptions:
    """A checkpoint's few-shot classifier fitted to a support folder (``predict`` and ``export``)."""

    checkpoint: str = option(help="a run directory (its best.pt) or a .pt checkpoint of meta-train or supervised",
                             metavar="RUN")
    support: str = option(help="support images: one subfolder per class, one or more images each (shots may "
                          "differ)", metavar="DIR")
    inference: str | None = option(None, "default: the one the checkpoint reports (meta: aggregated for sla, "
                                   "distilled for sla+sd; supervised: aggregated for sla, else plain)",
                                   choices=("plain", "single", "aggregated", "distilled"))
    head: str | None = option(None, "few-shot head solving the support set (default: the checkpoint's head; "
                              "supervised: protonet)")
    head_options: str | None = option(None, "options of --head, e.g. lambda_reg=50 (ridge) or C_reg=0.1,max_iter=15 "
                                      "(svm)", metavar="KEY=VALUE,...")
    device: str = option("cpu", "auto, cpu, cuda or cuda:N")
    num_threads: int = option(0, "CPU threads of torch (0: torch's default)")
    batch_size: int = option(64, "images per backbone call")
    support_augment: int = option(0, "fit to K copies of each support image through the checkpoint's training "
                                  "augmentation (RFS's protocol: 5); 0: off", metavar="K")
    augment_seed: int = option(0, "seed of --support-augment's draws")
    skip_bad: bool = option(False, "skip unreadable image files with a warning instead of stopping")
    quiet: bool = option(False, "print the result lines only")

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.num_threads < 0:
            raise ConfigError("--batch-size must be at least 1 and --num-threads at least 0")
        if self.support_augment < 0:
            raise ConfigError(f"--support-augment must be at least 0 (0: off), got {self.support_augment}")


@dataclass(kw_only=True)
class PredictOptions(ClassifierOptions):
    """What ``predict`` classifies and where it writes."""

    query: tuple[str, ...] = option(help="query image files and/or folders (searched recursively)", metavar="PATH")
    output: str | None = option(None, "write the predictions to FILE (.csv or .json)", metavar="FILE")


@dataclass(kw_only=True)
class ExportOptions(ClassifierOptions):
    """What ``export`` writes."""

    format: str = option("torchscript", "torchscript (torch.jit.load), onnx (needs pip install onnx onnxscript) "
                         "or backbone", choices=("torchscript", "onnx", "backbone"))
    input: str = option("tensors", "tensors: preprocessed float32 [B, C, S, S]; pixels: raw uint8 [B, H, W(, C)] "
                        "of any size, converted inside the module (TorchScript only)", choices=("tensors", "pixels"))
    output: str = option(help="the file to write (.pt for TorchScript, .onnx)", metavar="FILE")


def _classifier(opts: ClassifierOptions) -> Any:
    from .classifier import FewShotClassifier

    if opts.num_threads:
        torch.set_num_threads(opts.num_threads)
    options = parse_options(opts.head_options, "--head-options") if opts.head_options else None
    clf = FewShotClassifier.from_checkpoint(opts.checkpoint, device=opts.device, inference=opts.inference,
                                            head=opts.head, head_options=options, batch_size=opts.batch_size,
                                            support_augment=opts.support_augment, augment_seed=opts.augment_seed)
    return clf.fit(opts.support, skip_bad=opts.skip_bad)


def query_labels(paths: list[Path], roots: list[str], classes: list[Any]) -> list[str | None]:
    """The class of each query image given by its folder: ``ROOT/<class>/.../image`` for a query
    folder ROOT, when ``<class>`` is a support class (else ``None``)."""
    names = {str(c) for c in classes}
    dirs = [Path(r) for r in roots if Path(r).is_dir()]

    def label(p: Path) -> str | None:
        parts = next((p.relative_to(d).parts for d in dirs if p.is_relative_to(d)), ())
        return parts[0] if len(parts) >= 2 and parts[0] in names else None

    return [label(p) for p in paths]


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
    return check_writable_file(p, "the output file", f"pass another {option} FILE")  # before any work


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


@command("predict", PredictOptions, help="classify your own images with a trained checkpoint and a support folder",
         description="Fit a trained checkpoint's few-shot classifier to a support folder (one subfolder per class) "
         "and classify query images; prints a table (and the accuracy when the query folder has one subfolder per "
         "support class) and writes CSV/JSON with one probability column per class.")
def run_predict(args: argparse.Namespace) -> int:
    from .preprocess import list_images
    from .support import load_pixels

    opts = build_config(PredictOptions, args)
    output = _check_output(opts.output, (".csv", ".json"))
    paths = list_images(opts.query, what="query")
    clf = _classifier(opts)
    kept: list[Path] = []
    probs = []
    for start in range(0, len(paths), _CHUNK):
        chunk = paths[start:start + _CHUNK]
        pixels, ok = load_pixels(chunk, clf.spec, opts.skip_bad)
        if pixels:
            probs.append(torch.softmax(clf.logits(clf.spec.normalise(torch.stack(pixels))), dim=-1))
            kept += [chunk[i] for i in ok]
    if not kept:
        raise ValueError("no query image could be read; pass readable image files")
    p = torch.cat(probs)
    rows = prediction_rows(kept, p, clf.classes_)
    truth = query_labels(kept, opts.query, clf.classes_)
    if not opts.quiet:
        print(_table(rows, truth))
    shots = ", ".join(f"{c}: {k}" for c, k in zip(clf.classes_, clf.shots_))
    print(f"{len(rows)} queries, {clf.n_way} classes ({shots}); inference {clf.inference}, head {clf.head_name}")
    info: dict[str, Any] = {"checkpoint": str(opts.checkpoint), "support": str(opts.support),
                            "inference": clf.inference, "head": clf.head_name,
                            "classes": [str(c) for c in clf.classes_], "shots": clf.shots_,
                            "support_augment": clf.support_augment,
                            "support_recipe": clf.support_recipe if clf.support_augment else None}
    if all(t is not None for t in truth):
        correct = sum(r["prediction"] == t for r, t in zip(rows, truth))
        info["accuracy"] = correct / len(rows)
        print(f"accuracy: {100 * info['accuracy']:.2f}% ({correct}/{len(rows)}; labels from the query subfolders)")
    if output is not None:  # after the table: a failed write loses nothing
        with writing(output, "the output file", "pass another --output FILE (the predictions are printed above)"):
            write_rows(output, rows, info)
        print(f"wrote {output}")
    return 0


@command("export", ExportOptions, help="export a checkpoint fitted to a support folder as a TorchScript or ONNX "
         "classifier", description="Bake a support folder into a standalone module: preprocessed images "
         "[B, C, S, S] -> class probabilities [B, N], with the SLA transforms and aggregation (or the distilled "
         "head) inside. --format backbone exports the embedding network alone.")
def run_export(args: argparse.Namespace) -> int:
    from .export import export_classifier

    opts = build_config(ExportOptions, args)
    suffix = {"torchscript": (".pt", ".pth", ".ts"), "backbone": (".pt", ".pth", ".ts"), "onnx": (".onnx",)}
    output = _check_output(opts.output, suffix[opts.format])
    if opts.format == "onnx":
        from .export import _onnx_modules

        _onnx_modules()  # fail before loading anything
    clf = _classifier(opts)
    with writing(output, "the export file", "pass another --output FILE"):
        export_classifier(clf, output, opts.format, pixels=opts.input == "pixels")
    size = output.stat().st_size
    what = "embedding network" if opts.format == "backbone" else (
        f"{clf.n_way}-way classifier (inference {clf.inference}, head {clf.head_name})")
    print(f"wrote {output} ({size / 2**20:.2f} MiB): {opts.format} {what}; classes {', '.join(map(str, clf.classes_))}")
    c, n = clf.spec.channels, clf.spec.image_size
    if not opts.quiet:
        print("input: uint8 [B, H, W] or [B, H, W, C] raw pixels of any size (converted inside the module)"
              if opts.input == "pixels" else f"input: float32 [B, {c}, {n}, {n}] from "
              "fewshot_sla.predict.preprocess_images (spec in the file's metadata)")
    return 0
