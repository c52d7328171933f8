"""Evaluation of supervised models: every inference of a mode (:mod:`fewshot_sla.inferences`; ``joint``
and ``transform`` are accuracies over the n*M transformed rows), per-class and shot-group
accuracies, the paper's table names, and logit ensembles of several checkpoints. The *primary*
inference (``reported("supervised", mode)``: the single-pass prediction) selects the model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from .. import sla
from ..data.spec import ImageSpec
from ..engine import autocast
from ..inferences import reported
from ..transforms import TransformSet
from .longtail import group_accuracy

__all__ = ["Predictions", "predict", "accuracy_report", "method_name", "table_entries", "ensemble",
           "evaluate_checkpoints"]

_ROW_INFERENCES = ("joint", "transform")  # accuracies over the n*M transformed rows


@dataclass
class Predictions:
    """``logits[name]``: float32 ``[n, N]`` on the CPU; ``rows_correct[name]``: bool ``[n, M]``
    (``joint``, ``transform``); ``labels``: int64 ``[n]``."""

    labels: torch.Tensor
    logits: dict[str, torch.Tensor] = field(default_factory=dict)
    rows_correct: dict[str, torch.Tensor] = field(default_factory=dict)


@torch.no_grad()
def predict(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, tset: TransformSet,
            preprocess: Callable[[torch.Tensor], torch.Tensor], *, batch_size: int = 500,
            device: torch.device | str = "cpu", channels_last: bool = False,
            amp: torch.dtype | None = None) -> Predictions:
    """Every inference of ``model``'s mode over uint8 ``images [n, C, H, W]`` (eval mode;
    ``preprocess``: uint8 -> normalised float; ``amp``: the autocast dtype or ``None``)."""
    device = torch.device(device)
    M, mode = model.M, model.mode
    was_training = model.training
    model.eval()
    labels = torch.as_tensor(labels).long().cpu()
    chunks: dict[str, list[torch.Tensor]] = {}
    try:
        for start in range(0, images.shape[0], batch_size):
            xb = preprocess(images[start : start + batch_size].to(device))
            yb = labels[start : start + batch_size].to(device)
            xt = tset(xb)
            if channels_last:
                xt = xt.contiguous(memory_format=torch.channels_last)
            with autocast(device, amp):
                out = model(xt)
            out = {k: v.float() for k, v in out.items()}
            got: dict[str, torch.Tensor] = {}
            if "joint" in out:
                got["single"] = sla.single_logits(out["joint"], M)
                got["aggregated"] = sla.aggregated_logits(out["joint"], M)
                got["joint"] = (out["joint"].argmax(-1) == sla.joint_labels(yb, M)).view(-1, M)
                if "class" in out:
                    got["distilled"] = sla.identity_rows(out["class"], M)
            else:
                got["single"] = sla.identity_rows(out["class"], M)
                if mode != "baseline":
                    got["aggregated"] = sla.aggregated_logits(out["class"], M, joint=False)
            if "transform" in out:
                tl = sla.transform_labels(yb.shape[0], M, device)
                got["transform"] = (out["transform"].argmax(-1) == tl).view(-1, M)
            for k, v in got.items():
                chunks.setdefault(k, []).append(v.cpu())
    finally:
        model.train(was_training)
    pred = Predictions(labels=labels)
    for k, vs in chunks.items():
        (pred.rows_correct if k in _ROW_INFERENCES else pred.logits)[k] = torch.cat(vs)
    return pred


def _correct(pred: Predictions, name: str) -> torch.Tensor:
    """Per-example correctness ``[n]`` (float; the mean over the M rows for row inferences)."""
    if name in pred.rows_correct:
        return pred.rows_correct[name].float().mean(1)
    return (pred.logits[name].argmax(-1) == pred.labels).float()


def accuracy_report(pred: Predictions, num_classes: int, class_counts: Sequence[int] | None = None) -> dict:
    """``{"accuracy": {name: acc}, "per_class": {name: [acc_c]}, "groups": {name: {overall,
    many, medium, few}}}``; ``groups`` only when training ``class_counts`` are given."""
    report: dict = {"accuracy": {}, "per_class": {}}
    if class_counts is not None:
        report["groups"] = {}
    counts_per_class = torch.bincount(pred.labels, minlength=num_classes).clamp_min(1).double()
    for name in [*pred.logits, *pred.rows_correct]:
        c = _correct(pred, name).double()
        report["accuracy"][name] = float(c.mean()) if c.numel() else float("nan")
        per_class = torch.zeros(num_classes, dtype=torch.float64).index_add_(0, pred.labels, c) / counts_per_class
        report["per_class"][name] = per_class.tolist()
        if class_counts is not None:
            report["groups"][name] = group_accuracy(per_class.tolist(), class_counts)
    return report


def method_name(loss: str = "ce", drw: bool = False) -> str:
    """Long-tailed method of a loss setting: Baseline (CE), CE-DRW (also cb + drw), CB-RW, LDAM, LDAM-DRW."""
    if loss == "ldam":
        return "LDAM-DRW" if drw else "LDAM"
    if drw:
        return "CE-DRW"
    return "CB-RW" if loss == "cb" else "Baseline"


def table_entries(mode: str, loss: str = "ce", drw: bool = False) -> dict[str, str]:
    """Names the paper's tables use -> the inference they report, e.g. ``{"SLA+SI": "single",
    "SLA+AG": "aggregated"}`` for sla, ``{"LDAM-DRW + SLA+SD": "distilled"}`` for a long-tailed
    LDAM-DRW run with sla+sd."""
    base = method_name(loss, drw)
    names = {"baseline": {"Baseline": "single"}, "da": {"DA": "single"}, "mt": {"MT": "single"},
             "sla": {"SLA+SI": "single", "SLA+AG": "aggregated"}, "sla+sd": {"SLA+SD": "distilled"}}[mode]
    if base == "Baseline":
        return names
    if mode == "baseline":
        return {base: "single"}
    return {f"{base} + {k}": v for k, v in names.items()}


def ensemble(predictions: Sequence[Predictions], primaries: Sequence[str]) -> Predictions:
    """Mean logits of models evaluated on the same examples: ``ensemble`` of each one's primary
    inference (the paper's independent ensemble), and each inference all of them have."""
    if not predictions:
        raise ValueError("need at least one set of predictions to ensemble")
    labels = predictions[0].labels
    for p in predictions[1:]:
        if not torch.equal(p.labels, labels):
            raise ValueError("the checkpoints were evaluated on different examples; use one dataset and split")
    out = Predictions(labels=labels)
    out.logits["ensemble"] = torch.stack([p.logits[k] for p, k in zip(predictions, primaries)]).mean(0)
    common = set.intersection(*(set(p.logits) for p in predictions))
    for name in sorted(common):
        out.logits[name] = torch.stack([p.logits[name] for p in predictions]).mean(0)
    return out


def evaluate_checkpoints(paths: Sequence[str], *, split: str = "test", data_root: str | None = None,
                         device: str = "auto", batch_size: int | None = None, data=None) -> dict:
    """JSON-ready report of one checkpoint, or the logit ensemble of several, on ``split`` (test or val),
    with the data of the first one's config (``data`` replaces loading, as in tests)."""
    from ..devices import resolve_device
    from ..engine import amp_dtype, load_model
    from ..transforms import get_transform_set
    from .data import load_data

    if split not in ("test", "val"):
        raise ValueError(f"--split must be 'test' or 'val', got {split!r}")
    if not paths:
        raise ValueError("pass at least one checkpoint (a .pt file or a run directory)")
    dev = resolve_device(device)
    loaded = [load_model(p, dev) for p in paths]
    for p, lm in zip(paths, loaded):
        if lm.pipeline != "supervised":
            raise ValueError(f"{p} is a checkpoint of `fewshot-sla {lm.pipeline}`; evaluate it with "
                             f"fewshot-sla eval --checkpoint {p}")
    first, meta0 = loaded[0].config, loaded[0].data
    for p, lm in zip(paths, loaded):
        if (lm.config.dataset, lm.data["num_classes"]) != (first.dataset, meta0["num_classes"]):
            raise ValueError(
                f"{p} was trained on {lm.config.dataset} ({lm.data['num_classes']} classes) but {paths[0]} on "
                f"{first.dataset} ({meta0['num_classes']} classes); ensemble checkpoints of one dataset"
            )
    if data is None:
        cfg = first.replace(data_root=data_root) if data_root else first
        data = load_data(cfg, need_train=split == "val")
    images, labels = (data.test_images, data.test_labels) if split == "test" else (data.val_images, data.val_labels)
    if split == "val" and len(labels) == 0:
        raise ValueError("this run has no validation set (long-tailed, or val_size = 0); use --split test")
    counts = meta0["class_counts"] if first.long_tailed else None
    preds, primaries, members = [], [], []
    for p, lm in zip(paths, loaded):
        c, meta, model = lm.config, lm.data, lm.model
        if c.channels_last:  # weights in the inputs' memory format
            model.to(memory_format=torch.channels_last)
        pre = ImageSpec.from_checkpoint(meta).normalise  # the normalisation the run validated with
        pred = predict(model, images, labels, get_transform_set(meta["transforms"]), pre,
                       batch_size=batch_size or first.eval_batch_size, device=dev, channels_last=c.channels_last,
                       amp=amp_dtype(c.amp, dev))
        preds.append(pred)
        primaries.append(reported("supervised", c.mode))
        rep = accuracy_report(pred, meta["num_classes"], counts)
        members.append({"checkpoint": str(p), "mode": c.mode, "transforms": meta["transforms"],
                        "primary": primaries[-1], "accuracy": rep["accuracy"],
                        "table": {k: rep["accuracy"][v] for k, v in table_entries(c.mode, c.loss, c.drw).items()}})
    if len(preds) == 1:
        rep = accuracy_report(preds[0], meta0["num_classes"], counts)
        return {"checkpoint": str(paths[0]), "split": split, "mode": first.mode, "primary": primaries[0],
                "iteration": loaded[0].checkpoint["iteration"], **rep, "table": members[0]["table"]}
    ens = ensemble(preds, primaries)
    rep = accuracy_report(ens, meta0["num_classes"], counts)
    return {"checkpoints": [str(p) for p in paths], "split": split, "members": members, **rep,
            "table": {f"Ensemble of {len(paths)}": rep["accuracy"]["ensemble"]}}
