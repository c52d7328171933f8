"""The meta-learning model: backbone + few-shot head + learnable logit scale(s).

:class:`FewShotModel` embeds the support and query images of a batch of episodes in ONE backbone
call, then applies the head per task (outside autocast, on float32 features). ``sla+sd`` adds
``distill_scale``, the distilled N-way head's own logit scale (init 1.0).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor, nn

from ..backbones import get_backbone
from ..config import ConfigError, config_from_dict
from ..engine.checkpoint import PIPELINES, LoadedModel
from ..heads import get_head
from ..registry import Registry
from ..transforms import TransformSet, get_transform_set
from .config import INFERENCES, MetaTrainConfig

__all__ = ["EPISODIC_MODELS", "FewShotModel", "build_model", "model_from_checkpoint", "episodic_model"]

#: pipeline -> ``episodic_model(loaded, head, head_options, svm_max_iter) -> (FewShotModel, MetaTrainConfig)``,
#: the model ``eval`` solves episodes with on a checkpoint of that pipeline
EPISODIC_MODELS: Registry = Registry("pipeline")


class FewShotModel(nn.Module):
    """Backbone ``[B, C, H, W] -> [B, D]`` + few-shot head ``(query, support, support_labels, n_way)
    -> [T, Q, n_way]`` + logit scale(s) (MetaOptNet's, init ``scale_init``) of one training mode."""

    #: features in eval mode do not depend on the episode (``eval`` may cache them); a learner that
    #: adapts per task or a transductive one sets ``False`` (and may name why in ``episode_dependence``)
    episode_independent: bool = True

    def __init__(self, backbone: nn.Module, head: nn.Module, mode: str = "baseline",
                 transforms: TransformSet | str = "none", learn_scale: bool = True, scale_init: float = 1.0) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.mode = mode
        self.transforms = get_transform_set("none" if mode == "baseline" else transforms)
        self.scale = nn.Parameter(torch.full((), float(scale_init)), requires_grad=learn_scale)
        if mode == "sla+sd":
            self.distill_scale = nn.Parameter(torch.full((), float(scale_init)), requires_grad=learn_scale)
        self.amp_dtype: torch.dtype | None = None  # runtime settings, not saved
        self.channels_last = False
        self.head_kwargs: dict[str, Any] = {}  # extra keyword arguments of every head call
        self.inferences: tuple[str, ...] = INFERENCES[mode]  # a pretrained backbone adds "plain"

    @property
    def M(self) -> int:
        return self.transforms.M

    def embed(self, support: Tensor, query: Tensor) -> tuple[Tensor, Tensor]:
        """Features of support ``[T, S, C, H, W]`` and query ``[T, Q, C, H, W]`` in one backbone
        call; returns float32 ``([T, S, D], [T, Q, D])``."""
        t, s = support.shape[:2]
        q = query.shape[1]
        x = torch.cat([support.reshape(t * s, *support.shape[2:]), query.reshape(t * q, *query.shape[2:])])
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            f = self.backbone(x)
        f = f.float()
        return f[: t * s].reshape(t, s, -1), f[t * s:].reshape(t, q, -1)

    def classify(self, query: Tensor, support: Tensor, support_labels: Tensor, n_way: int,
                 distill: bool = False) -> Tensor:
        """Scaled head logits ``[T, Q, n_way]`` (outside autocast, float32 features)."""
        scale = self.distill_scale if distill else self.scale
        with torch.autocast(query.device.type, enabled=False):
            return scale * self.head(query.float(), support.float(), support_labels, n_way, **self.head_kwargs)

    def forward(self, support: Tensor, support_labels: Tensor, query: Tensor, n_way: int) -> Tensor:
        """N-way logits ``[T, Q, n_way]`` of untransformed episodes (the ``plain`` inference)."""
        fs, fq = self.embed(support, query)
        return self.classify(fq, fs, support_labels, n_way, distill=self.mode == "sla+sd")


def build_model(cfg: MetaTrainConfig, channels: int, image_size: int) -> FewShotModel:
    """The model ``cfg`` describes for ``channels x image_size x image_size`` inputs."""
    if "in_channels" in cfg.backbone_options:
        raise ValueError(f"--backbone-options in_channels: the data's channels ({channels}) set it; drop it")
    backbone = get_backbone(cfg.backbone, channels, **{"image_size": image_size, **cfg.backbone_options})
    if cfg.learner != "head":  # an inner loop per task (MAML family)
        from .gradient import GradientModel

        return GradientModel(backbone, cfg.learner, cfg.mode, cfg.transforms, cfg.n_way, cfg.inner_lr, cfg.inner_steps,
                             cfg.inner_steps_test, cfg.first_order, cfg.meta_sgd, cfg.classifier_init,
                             cfg.task_batching)
    head = get_head(cfg.head, **cfg.head_kwargs())
    return FewShotModel(backbone, head, cfg.mode, cfg.transforms, cfg.learn_scale, cfg.scale_init)


@PIPELINES.register("meta")
def model_from_checkpoint(ckpt: dict[str, Any], source: str = "checkpoint") -> tuple[FewShotModel, MetaTrainConfig]:
    """The model (weights loaded, on the CPU) and config of a meta-training checkpoint."""
    cfg = config_from_dict(MetaTrainConfig, ckpt["config"], source=source, notes=False)
    data = ckpt["data"]
    model = build_model(cfg, data["channels"], data["image_size"])
    model.load_state_dict(ckpt["model"])
    return model, cfg


@EPISODIC_MODELS.register("meta")
def episodic_model(loaded: LoadedModel, head: str = "", head_options: dict[str, Any] | None = None,
                   svm_max_iter: int = 3) -> tuple[FewShotModel, MetaTrainConfig]:
    """A meta-training checkpoint's model, with its head rebuilt when ``head`` or ``head_options``
    are given; an SVM head solves its QP in ``svm_max_iter`` iterations."""
    model, cfg = loaded.model, loaded.config
    if getattr(cfg, "learner", "head") != "head":
        if head or head_options:
            raise ConfigError(f"{cfg.learner} checkpoints adapt their own classifier per episode; drop --head and "
                              "--head-options")
        return model, cfg
    other = bool(head) and head != cfg.head
    if other or head_options:
        own = {} if other else cfg.head_options
        cfg = dataclasses.replace(cfg, head=head or cfg.head, head_options={**own, **(head_options or {})})
        model.head = get_head(cfg.head, **cfg.head_kwargs())
    if cfg.head == "svm":
        model.head_kwargs = {"max_iter": svm_max_iter}
    return model, cfg
