"""The one table of inferences (which predictions each pipeline's modes report, which one selects
``best.pt`` and is ``predict``'s default) and the N-way logits of each from a head's outputs.

| name | prediction |
| --- | --- |
| ``plain`` | meta: the N-way head on untransformed support and queries (baseline, da) |
| ``single`` | SLA+SI: the identity view against the identity classes (supervised baseline/da/mt: plain) |
| ``aggregated`` | SLA+AG: logits of view j against classes (i, j), averaged over j |
| ``distilled`` | SLA+SD: the self-distilled N-way head, one forward pass per image |
| ``joint`` | supervised: N*M-way accuracy of every transformed row (sla, sla+sd) |
| ``transform`` | supervised: accuracy of MT's M-way transform head |

In episodes a supervised checkpoint's features are solved with a few-shot head (the ``pretrained``
rows); for its SLA+SD checkpoints ``plain`` is the single-pass inference.
"""

from __future__ import annotations

from torch import Tensor

from . import sla

__all__ = ["INFERENCES", "REPORTED", "inferences", "reported", "episode_table", "head_logits"]

#: pipeline -> mode -> inferences, in report order
INFERENCES: dict[str, dict[str, tuple[str, ...]]] = {
    "meta": {
        "baseline": ("plain",),
        "da": ("plain",),
        "sla": ("single", "aggregated"),
        "sla+sd": ("single", "aggregated", "distilled"),
    },
    "pretrained": {
        "baseline": ("plain",),
        "da": ("plain",),
        "mt": ("plain",),
        "sla": ("plain", "single", "aggregated"),
        "sla+sd": ("plain", "single", "aggregated"),
    },
    "supervised": {
        "baseline": ("single",),
        "da": ("single", "aggregated"),
        "mt": ("single", "aggregated", "transform"),
        "sla": ("single", "aggregated", "joint"),
        "sla+sd": ("distilled", "single", "aggregated", "joint"),
    },
}

#: pipeline -> mode -> the inference reported and used to select ``best.pt``
REPORTED: dict[str, dict[str, str]] = {
    "meta": {"baseline": "plain", "da": "plain", "sla": "aggregated", "sla+sd": "distilled"},
    "pretrained": {"baseline": "plain", "da": "plain", "mt": "plain", "sla": "aggregated", "sla+sd": "plain"},
    "supervised": {"baseline": "single", "da": "single", "mt": "single", "sla": "single", "sla+sd": "distilled"},
}


def inferences(pipeline: str, mode: str) -> tuple[str, ...]:
    """Inferences a model of ``pipeline`` trained in ``mode`` supports."""
    return INFERENCES[pipeline][mode]


def reported(pipeline: str, mode: str) -> str:
    """The inference ``pipeline`` reports (and selects ``best.pt`` by) for ``mode``."""
    return REPORTED[pipeline][mode]


def episode_table(pipeline: str) -> str:
    """The table of a ``pipeline`` checkpoint solving episodes: ``meta``, or ``pretrained``."""
    return "meta" if pipeline == "meta" else "pretrained"


def head_logits(inference: str, logits: Tensor, M: int) -> Tensor:
    """N-way logits ``[..., B, N]`` of ``inference`` from a few-shot head's logits over the support's
    classes: ``[..., B*M, N*M]`` (aggregated: every view of each query against the joint classes),
    ``[..., B, N*M]`` (single: the untransformed queries) or ``[..., B, N]`` (plain, distilled: as
    they are)."""
    if inference == "aggregated":
        return sla.aggregated_logits(logits, M)
    return sla.single_logits(logits, M, views=False) if inference == "single" else logits
