"""The one table of inferences: which predictions each pipeline's modes report, and which one
selects ``best.pt``.

=============  ======================================================================
name           prediction
=============  ======================================================================
``plain``      meta: the N-way head on untransformed support and queries (baseline, da)
``single``     SLA+SI: the identity view scored against the identity classes (supervised
               baseline/da/mt: the N-way head on the untransformed image)
``aggregated`` SLA+AG: logits of view j against classes (i, j), averaged over j
``distilled``  SLA+SD: the self-distilled N-way head, one forward pass per image
``joint``      supervised: N*M-way accuracy of every transformed row (sla, sla+sd)
``transform``  supervised: accuracy of MT's M-way transform head
=============  ======================================================================

In episodes (``fewshot-sla eval``), a supervised checkpoint's base-class heads cannot score
novel classes: its backbone's features are solved with a few-shot head (the ``pretrained``
rows). For SLA+SD checkpoints ``plain`` is their single-pass inference: the distillation trains
the untransformed features that ``plain`` uses.

The two pipelines name the untransformed N-way prediction of a baseline differently
(``plain`` in meta-training, whose heads solve episodes; ``single`` in the supervised
pipeline, where it is the same head as SLA+SI's); the names are kept as the metrics files
of earlier runs use them.
"""

from __future__ import annotations

__all__ = ["INFERENCES", "REPORTED", "inferences", "reported"]

#: pipeline -> mode -> inferences, in report order
INFERENCES: dict[str, dict[str, tuple[str, ...]]] = {
    "meta": {
        "baseline": ("plain",),
        "da": ("plain",),
        "sla": ("single", "aggregated"),
        "sla+sd": ("single", "aggregated", "distilled"),
    },
    # a supervised checkpoint evaluated in episodes (fewshot-sla eval): the backbone's features with
    # a few-shot head; "plain" on the untransformed images, SLA's views for SLA-pretrained ones
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
