"""fewshot-sla: few-shot and supervised learning with Self-supervised Label Augmentation
(Lee, Hwang & Shin, ICML 2020). Importing the package imports its pipelines, ``meta`` and
``supervised``, which register their checkpoint loaders in ``engine.PIPELINES``.
"""

__version__ = "0.2.0"

from . import meta, supervised  # noqa: E402, F401  (after __version__, which the CLI imports)
