"""One checkpoint format for both pipelines, and the one loader of trained models.

A checkpoint (``last.pt``, ``best.pt``) is a dict::

    format       "fewshot-sla/2"
    pipeline     "meta" | "supervised": which trainer wrote it (and rebuilds its model)
    config       the run's resolved config (dataclass as dict)
    data         what the model was trained on: channels, image_size, mean, std, dataset, and
                 for supervised runs num_classes, M, class_names, class_counts, transforms, ...
    model        the unwrapped model's state_dict
    ...          the trainer's own state for --resume (optimiser, scheduler, scaler, RNG,
                 progress, best score)

:func:`load_model` rebuilds the model of any checkpoint, also those written before this format
(``fewshot-sla/meta/1`` and ``fewshot-sla-supervised/1``, upgraded on reading by
:func:`upgrade`)::

    from fewshot_sla.engine import load_model
    loaded = load_model("runs/omniglot_sla", device="cpu")    # a run directory or a .pt file
    loaded.model, loaded.config, loaded.pipeline, loaded.data

Each pipeline registers the function rebuilding its model in :data:`PIPELINES` from its own
module (``@PIPELINES.register("meta")`` in ``meta/model.py``); importing ``fewshot_sla`` imports
the built-in pipelines, so their checkpoints load.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..registry import Registry
from ..rundir import check_finite_state, load_checkpoint, resolve_checkpoint
from ..safe_load import to_plain

__all__ = ["FORMAT", "LEGACY_FORMATS", "PIPELINES", "LoadedModel", "make_checkpoint", "upgrade",
           "read_checkpoint", "load_model"]

FORMAT = "fewshot-sla/2"
#: formats written by earlier versions -> the pipeline that wrote them
LEGACY_FORMATS: dict[str, str] = {"fewshot-sla/meta/1": "meta", "fewshot-sla-supervised/1": "supervised"}
#: pipeline -> ``model_from_checkpoint(checkpoint, source) -> (model on the CPU, config)``
PIPELINES: Registry = Registry("pipeline")


def make_checkpoint(pipeline: str, config: dict[str, Any], data: dict[str, Any], model: dict[str, Any],
                    **state: Any) -> dict[str, Any]:
    """A checkpoint dict of ``pipeline`` (``state``: the trainer's resume state), holding only tensors
    and plain containers (:func:`~fewshot_sla.safe_load.to_plain`: it loads with ``weights_only=True``)."""
    if pipeline not in PIPELINES:
        raise ValueError(f"unknown pipeline {pipeline!r}; one of {', '.join(PIPELINES)}")
    return to_plain({"format": FORMAT, "pipeline": pipeline, "config": config, "data": data, "model": model,
                     **state})


def upgrade(ckpt: Any, source: str = "checkpoint") -> dict[str, Any]:
    """``ckpt`` in the current format (earlier formats converted; the dict is not copied).

    Raises ``ValueError`` (one line naming ``source``) for anything that is not a fewshot-sla
    checkpoint."""
    fmt = ckpt.get("format") if isinstance(ckpt, dict) else None
    if fmt == FORMAT:
        return ckpt
    if fmt in LEGACY_FORMATS:
        ckpt["pipeline"] = LEGACY_FORMATS[fmt]
        if "meta" in ckpt and "data" not in ckpt:  # the supervised trainer's name for it
            ckpt["data"] = ckpt.pop("meta")
        ckpt["format"] = FORMAT
        return ckpt
    raise ValueError(f"{source} is not a fewshot-sla checkpoint (format {fmt!r}); pass best.pt or last.pt "
                     "of a meta-train or supervised run, or its run directory")


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint (a ``.pt`` file, or a run directory: its ``best.pt``, else ``last.pt``)
    in the current format, with ``weights_only=True`` (:mod:`fewshot_sla.safe_load`: a file that
    would run code is refused in one line)."""
    return upgrade(load_checkpoint(path, map_location=map_location), str(path))


@dataclass
class LoadedModel:
    """A trained model with what it was trained with."""

    model: torch.nn.Module  # in eval mode, on the requested device
    config: Any  # the run's config dataclass (MetaTrainConfig or SupervisedConfig)
    pipeline: str  # "meta" or "supervised"
    data: dict[str, Any]  # channels, image_size, mean, std, ... (see the module docs)
    checkpoint: dict[str, Any]  # the whole checkpoint, current format
    path: str


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the model of any fewshot-sla checkpoint (either pipeline, any format version);
    a checkpoint with non-finite weights is refused in one line naming the file and tensor."""
    ckpt = read_checkpoint(path, map_location="cpu")
    check_finite_state(ckpt["model"], resolve_checkpoint(path))  # a diverged run's weights: one line
    model, config = PIPELINES.build(ckpt["pipeline"], ckpt, source=str(path))
    model.to(torch.device(device)).eval()
    return LoadedModel(model, config, ckpt["pipeline"], ckpt["data"], ckpt, str(path))
