"""The supervised classifier: a shared backbone feature and the heads each mode needs.

Modes' heads on the feature ``f(x) [R, D]``: baseline, da: ``class`` (N-way); mt: ``class`` and
``transform`` (M-way, linear); sla: ``joint`` (N*M-way); sla+sd: ``joint`` and ``class``. Heads are
``Linear(D, K)`` or, with ``cosine=True`` (LDAM), :class:`CosineLinear` with a fixed scale ``s`` (30,
Cao et al.'s ``NormedLinear`` with ``s`` inside the head, so every loss sees the same logits).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import get_backbone
from ..config import config_from_dict
from ..engine.checkpoint import PIPELINES, LoadedModel
from ..heads import get_head
from ..inferences import inferences
from ..meta.config import MetaTrainConfig
from ..meta.model import EPISODIC_MODELS, FewShotModel
from .config import SupervisedConfig

__all__ = ["CosineLinear", "SupervisedModel", "build_model", "model_for_config", "model_from_checkpoint",
           "HEADS_BY_MODE", "episodic_model", "pretrained_episodic_model"]

HEADS_BY_MODE: dict[str, tuple[str, ...]] = {"baseline": ("class",), "da": ("class",), "mt": ("class", "transform"),
                                             "sla": ("joint",), "sla+sd": ("joint", "class")}


class CosineLinear(nn.Module):
    """``[R, D] -> [R, K]``: ``scale * <f / |f|, w_k / |w_k|>`` (no bias); weights start uniform in [-1, 1]."""

    def __init__(self, in_features: int, out_features: int, scale: float = 30.0) -> None:
        super().__init__()
        self.in_features, self.out_features, self.scale = in_features, out_features, float(scale)
        self.weight = nn.Parameter(torch.empty(out_features, in_features).uniform_(-1.0, 1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * F.linear(F.normalize(x, dim=-1), F.normalize(self.weight, dim=-1))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, scale={self.scale}"


class SupervisedModel(nn.Module):
    """Backbone + the heads of ``mode``; ``forward(x [R, C, H, W]) -> dict`` of logits
    ``joint [R, N*M]``, ``class [R, N]``, ``transform [R, M]`` (those the mode has)."""

    def __init__(self, backbone: nn.Module, num_classes: int, M: int, mode: str, cosine: bool = False,
                 scale: float = 30.0) -> None:
        super().__init__()
        if mode not in HEADS_BY_MODE:
            raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(HEADS_BY_MODE)}")
        if num_classes < 1 or M < 1:
            raise ValueError(f"need num_classes >= 1 and M >= 1, got {num_classes}, {M}")
        self.backbone = backbone
        self.num_classes, self.M, self.mode, self.cosine = int(num_classes), int(M), mode, bool(cosine)
        d = int(backbone.out_dim)

        def head(k: int) -> nn.Module:
            return CosineLinear(d, k, scale) if cosine else nn.Linear(d, k)

        heads = HEADS_BY_MODE[mode]
        self.joint = head(num_classes * M) if "joint" in heads else None
        self.classifier = head(num_classes) if "class" in heads else None
        self.transform_head = nn.Linear(d, M) if "transform" in heads else None

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.backbone(x)
        out: dict[str, torch.Tensor] = {}
        if self.joint is not None:
            out["joint"] = self.joint(f)
        if self.classifier is not None:
            out["class"] = self.classifier(f)
        if self.transform_head is not None:
            out["transform"] = self.transform_head(f)
        return out


def build_model(backbone: str, num_classes: int, M: int, mode: str, *, in_channels: int = 3, image_size: int = 32,
                cosine: bool = False, scale: float = 30.0, backbone_options: dict | None = None) -> SupervisedModel:
    """``get_backbone(backbone, in_channels, image_size=..., **backbone_options)`` + heads."""
    net = get_backbone(backbone, in_channels, **{"image_size": image_size, **(backbone_options or {})})
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"the cosine-classifier scale must be a positive number, got {scale}")
    return SupervisedModel(net, num_classes, M, mode, cosine=cosine, scale=scale)


def model_for_config(cfg: SupervisedConfig, num_classes: int, M: int, channels: int,
                     image_size: int) -> SupervisedModel:
    """The freshly initialised model ``cfg`` describes for this data and ``M`` transforms."""
    return build_model(cfg.backbone, num_classes, M, cfg.mode, in_channels=channels, image_size=image_size,
                       cosine=cfg.cosine, scale=cfg.ldam_scale, backbone_options=cfg.backbone_options)


@PIPELINES.register("supervised")
def model_from_checkpoint(ckpt: dict[str, Any], source: str = "checkpoint") -> tuple[SupervisedModel, SupervisedConfig]:
    """The model (weights loaded, on the CPU) and config of a supervised checkpoint."""
    cfg = config_from_dict(SupervisedConfig, ckpt["config"], source=source, notes=False)
    data = ckpt["data"]
    model = model_for_config(cfg, data["num_classes"], data["M"], data["channels"], data["image_size"])
    model.load_state_dict(ckpt["model"])
    return model, cfg


_EPISODE_MODE = {"baseline": "baseline", "da": "baseline", "mt": "baseline", "sla": "sla", "sla+sd": "sla"}


def pretrained_episodic_model(s: SupervisedConfig, backbone: nn.Module, transforms: str, head: str = "",
                              svm_max_iter: int = 3, head_options: dict[str, Any] | None = None,
                              ) -> tuple[FewShotModel, MetaTrainConfig]:
    """A :class:`FewShotModel` on the run's ``backbone`` (shared, not copied) with the few-shot
    ``head`` (default protonet) and a fixed logit scale 1; SLA-pretrained backbones are evaluated
    NM-way too (``single``, ``aggregated``). Returns it with the meta-training view of run ``s``."""
    cfg = MetaTrainConfig(
        dataset=s.dataset, data_root=s.data_root, dataset_options=dict(s.dataset_options),
        image_size=s.image_size, backbone=s.backbone, backbone_options=dict(s.backbone_options),
        head_options=dict(head_options or {}), head=head or "protonet", mode=_EPISODE_MODE[s.mode],
        transforms=transforms if s.mode in ("sla", "sla+sd") else "rotation", learn_scale=False, device="cpu",
    )
    model = FewShotModel(backbone, get_head(cfg.head, **cfg.head_kwargs()), cfg.mode, cfg.transforms,
                         learn_scale=False)
    model.inferences = inferences("pretrained", s.mode)
    if cfg.head == "svm":
        model.head_kwargs = {"max_iter": svm_max_iter}
    return model, cfg


@EPISODIC_MODELS.register("supervised")
def episodic_model(loaded: LoadedModel, head: str = "", head_options: dict[str, Any] | None = None,
                   svm_max_iter: int = 3) -> tuple[FewShotModel, MetaTrainConfig]:
    """:func:`pretrained_episodic_model` of a loaded supervised checkpoint, on its device."""
    model, cfg = pretrained_episodic_model(loaded.config, loaded.model.backbone, loaded.data["transforms"],
                                           head, svm_max_iter, head_options)
    return model.to(next(loaded.model.parameters()).device).eval(), cfg
