"""Training objectives and inferences of the four meta-training modes.

Notation: a batch holds T episodes, N ways, K support and Q query images per episode
(``S = N*K``, ``Q = N*n_query`` rows); the transform set has M transforms (identity first);
``f`` is the backbone, ``h`` the few-shot head, ``a`` the learnable logit scale, ``eps`` the
label smoothing (MetaOptNet's: ``1 - eps`` on the target, ``eps / (C - 1)`` elsewhere), and
``CE_eps`` the mean cross-entropy with it. One backbone call embeds every image of the batch
(support and query, all transforms).

``baseline``
    ``plain = a * h(f(q), f(S), y_S, N)`` ``[T, Q, N]``; ``loss = CE_eps(plain, y_q)``.
``da`` (invariance baseline of the paper)
    every support and query image is transformed M times and keeps its class label; the
    N-way head is solved on the ``M*K`` shots per class of the transformed support and
    scores every transformed query row: ``loss = CE_eps(a * h(f(t(q)), f(t(S)), y_S, N), y_q)``
    over all ``T*Q*M`` rows. Test time: ``plain`` (untransformed support and query).
``sla``
    the episode is expanded to NM ways (row ``s*M + j`` holds ``t_j(x_s)``, label
    ``y*M + j``); ``joint = a * h(f(t(q)), f(t(S)), y_S*M + j, N*M)`` ``[T, Q*M, N*M]``;
    ``loss = CE_eps(joint, y_q*M + j)`` (times M with ``large_loss``). Inferences:
    ``single`` (SLA+SI) ``= joint[q*M + 0, i*M + 0]`` and ``aggregated`` (SLA+AG)
    ``agg[q, i] = 1/M sum_j joint[q*M + j, i*M + j]`` (logits averaged, then softmax).
``sla+sd`` (self-distillation; new, not in the paper's few-shot experiments)
    ``sla`` plus a single-pass N-way prediction on the untransformed images,
    ``distilled = a_sd * h(f(q), f(S), y_S, N)``, whose features are the identity rows
    (``s*M + 0``) of the already computed NM-way features (no extra backbone call)::

        loss = CE_eps(joint, y*M + j)
             + T^2 * KL(softmax(agg / T) || softmax(distilled / T))      (agg detached)
             + beta * CE(distilled, y)                                   (no smoothing)

    with the KL summed over classes and averaged over the ``T*Q`` queries (``batchmean``),
    ``T = sd_temperature = 1`` and ``beta = sd_beta = 1`` by default. At test time the
    ``distilled`` inference needs one forward pass per image (support and query), like
    ``plain``, while ``aggregated`` needs M. ``a_sd`` is a second learnable scale, the only
    parameter of the "second head". With ProtoNet, ``single`` and ``distilled`` share their
    prototypes (identity rows) and differ only by a positive scale, so they predict the same
    classes: there the SD terms act on the features alone; with ridge/SVM heads ``single``
    solves the NM-way problem on all transformed support images, ``distilled`` the N-way one
    on the untransformed images.

Validation selects ``best.pt`` by the reported inference of the mode: ``plain`` (baseline,
da), ``aggregated`` (sla), ``distilled`` (sla+sd).
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
    """Result of :func:`run_episodes`.

    Attributes:
        loss: scalar training loss (``None`` when no loss was asked for).
        parts: named loss terms (detached scalars), e.g. ``sla``, ``distill``, ``ce``.
        logits: inference name -> N-way logits ``[T, Q, N]``.
        labels: N-way query labels ``[T, Q]``.
        objective_acc: per-episode accuracy ``[T]`` of the logits the loss is computed on
            (NM-way joint accuracy for sla/sla+sd, all transformed rows for da).
    """

    loss: Tensor | None
    parts: dict[str, Tensor] = field(default_factory=dict)
    logits: dict[str, Tensor] = field(default_factory=dict)
    labels: Tensor | None = None
    objective_acc: Tensor | None = None


def episode_accuracy(logits: Tensor, labels: Tensor) -> Tensor:
    """Per-episode accuracy ``[T]`` of logits ``[T, Q, C]`` against labels ``[T, Q]``."""
    return (logits.argmax(-1) == labels).float().mean(-1)


def run_episodes(
    model: FewShotModel,
    batch: EpisodeBatch,
    loss: LossSettings | None = None,
    inferences: Sequence[str] | None = None,
) -> EpisodeOutput:
    """Forward a batch of preprocessed (float) N-way episodes through ``model``.

    Args:
        model: the :class:`FewShotModel` (its ``mode`` and ``transforms`` pick the method).
        batch: N-way episodes, images already augmented/normalised, ``M == 1``.
        loss: compute the training loss with these settings (``None``: inference only).
        inferences: inferences to compute (default: all the model supports, ``model.inferences``,
            see :mod:`fewshot_sla.inferences`); during training only those that come for free
            with the loss are added.

    Returns:
        :class:`EpisodeOutput` with the loss, its parts and the logits of each inference.
    """
    if batch.M != 1:
        raise ValueError("run_episodes expects N-way episodes (M == 1); it expands them itself")
    mode, n, m = model.mode, batch.n_way, model.M
    supported = model.inferences
    wanted = tuple(supported if inferences is None else inferences)
    bad = [i for i in wanted if i not in supported]
    if bad:
        raise ValueError(
            f"inference(s) {bad} are not supported by a model trained with mode {mode!r}; "
            f"choose from {', '.join(supported)}"
        )
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
        tset = model.transforms
        xb = batch.map_images(tset)
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
