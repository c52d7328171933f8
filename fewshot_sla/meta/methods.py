"""Training objectives and inferences of the four meta-training modes.

T episodes of N ways, support ``S``, queries ``q``, M transforms (identity first), backbone ``f``,
few-shot head ``h``, logit scale ``a``, ``CE_eps`` cross-entropy with MetaOptNet's label smoothing.

- ``baseline``: ``plain = a * h(f(q), f(S), y_S, N)``, ``loss = CE_eps(plain, y_q)``.
- ``da``: every image transformed M times keeps its label (training only; test time ``plain``).
- ``sla``: the episode expanded to NM ways (row ``s*M + j`` = ``t_j(x_s)``, label ``y*M + j``),
  ``joint [T, Q*M, N*M]``, ``loss = CE_eps(joint, y_q*M + j)``; inferences single, aggregated.
- ``sla+sd``: ``sla`` plus ``distilled = a_sd * h(...)`` on the identity rows of the same features,
  trained with :func:`fewshot_sla.sla.sla_sd_loss` (not in the paper's few-shot experiments).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import Tensor

from .. import sla
from ..episodes import EpisodeBatch, expand_episodes
from .model import FewShotModel

__all__ = ["LossSettings", "EpisodeOutput", "run_episodes", "episode_accuracy"]


@dataclass(frozen=True)
class LossSettings:
    """Loss hyper-parameters: label smoothing, ``large_loss`` (sla), SD temperature and beta, and
    whether the SD loss includes its distillation term (``False`` during ``--sd-start``'s warm-up)."""

    smoothing: float = 0.0
    large_loss: bool = False
    sd_temperature: float = 1.0
    sd_beta: float = 1.0
    sd_distill: bool = True


@dataclass
class EpisodeOutput:
    """``loss`` (``None`` without ``loss=``), its detached ``parts``, inference -> N-way ``logits
    [T, Q, N]``, query ``labels [T, Q]`` and ``objective_acc [T]``, the accuracy of the logits the loss
    is computed on (NM-way joint for sla/sla+sd, all transformed rows for da)."""

    loss: Tensor | None
    parts: dict[str, Tensor] = field(default_factory=dict)
    logits: dict[str, Tensor] = field(default_factory=dict)
    labels: Tensor | None = None
    objective_acc: Tensor | None = None


def episode_accuracy(logits: Tensor, labels: Tensor) -> Tensor:
    """Per-episode accuracy ``[T]`` of logits ``[T, Q, C]`` against labels ``[T, Q]``."""
    return (logits.argmax(-1) == labels).float().mean(-1)


def run_episodes(model: FewShotModel, batch: EpisodeBatch, loss: LossSettings | None = None,
                 inferences: Sequence[str] | None = None) -> EpisodeOutput:
    """Forward preprocessed N-way episodes (``M == 1``) through ``model``: the loss with ``loss``
    (``None``: inference only) and the logits of ``inferences`` (default: all ``model.inferences``;
    training adds those that come free with the loss). A model with its own ``run_episodes``
    (:class:`~fewshot_sla.meta.gradient.GradientModel`) runs it."""
    if hasattr(model, "run_episodes"):
        return model.run_episodes(batch, loss, inferences)
    if batch.M != 1:
        raise ValueError("run_episodes expects N-way episodes (M == 1); it expands them itself")
    mode, n, m = model.mode, batch.n_way, model.M
    supported = model.inferences
    wanted = tuple(supported if inferences is None else inferences)
    bad = [i for i in wanted if i not in supported]
    if bad:
        raise ValueError(f"inference(s) {bad} are not supported by a model trained with mode {mode!r}; "
                         f"choose from {', '.join(supported)}")
    ys, yq = batch.support_labels, batch.query_labels
    out = EpisodeOutput(loss=None, labels=yq)

    if mode == "baseline" or (mode == "da" and loss is None):
        fs, fq = model.embed(batch.support, batch.query)
        plain = model.classify(fq, fs, ys, n)
        out.logits["plain"] = plain
        if loss is not None:
            out.loss = sla.cross_entropy(plain, yq, loss.smoothing)
            out.objective_acc = episode_accuracy(plain, yq)
        return out

    if mode == "da":  # training: transformed rows keep their class label
        xb = batch.map_images(model.transforms)
        fs, fq = model.embed(xb.support, xb.query)
        logits = model.classify(fq, fs, sla.repeat_labels(ys, m), n)  # [T, Q*M, N]
        target = sla.repeat_labels(yq, m)
        out.loss = sla.cross_entropy(logits, target, loss.smoothing)
        out.objective_acc = episode_accuracy(logits, target)
        return out

    # sla / sla+sd
    if "plain" in wanted:  # a pretrained SLA backbone: the untransformed N-way episode too
        fs, fq = model.embed(batch.support, batch.query)
        out.logits["plain"] = model.classify(fq, fs, ys, n)
    need_joint = loss is not None or any(i in ("single", "aggregated") for i in wanted)
    if not need_joint:  # plain/distilled only: one forward per untransformed image
        if "distilled" in wanted:
            fs, fq = model.embed(batch.support, batch.query)
            out.logits["distilled"] = model.classify(fq, fs, ys, n, distill=True)
        return out
    xb = expand_episodes(batch, model.transforms)
    fs, fq = model.embed(xb.support, xb.query)  # [T, S*M, D], [T, Q*M, D]
    joint = model.classify(fq, fs, xb.support_labels, n * m)  # [T, Q*M, N*M]
    out.logits["single"] = sla.single_logits(joint, m)
    out.logits["aggregated"] = sla.aggregated_logits(joint, m)
    distilled = None
    if mode == "sla+sd":  # the distilled head on the identity rows s*M + 0 of the features
        distilled = model.classify(sla.identity_rows(fq, m), sla.identity_rows(fs, m), ys, n, distill=True)
        out.logits["distilled"] = distilled
    if loss is not None:
        out.objective_acc = episode_accuracy(joint, xb.query_labels)
        if distilled is None:
            l_sla = sla.sla_loss(joint, yq, m, large_loss=loss.large_loss, smoothing=loss.smoothing)
            out.parts["sla"] = l_sla.detach()
            out.loss = l_sla
        else:
            parts = sla.sla_sd_loss(joint, distilled, yq, m, T=loss.sd_temperature, beta=loss.sd_beta,
                                    large_loss=loss.large_loss, smoothing=loss.smoothing,
                                    with_distill=loss.sd_distill)
            out.parts.update({k: parts[k].detach() for k in ("sla", "distill", "ce")})
            out.loss = parts["total"]
    if inferences is not None:
        out.logits = {k: v for k, v in out.logits.items() if k in wanted or loss is not None}
    return out
