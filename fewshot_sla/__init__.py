"""fewshot-sla: few-shot and supervised learning with Self-supervised Label Augmentation.

Lee, Hwang & Shin, "Self-supervised Label Augmentation via Input Transformations",
ICML 2020. Importing the package needs its requirements alone (torch, numpy, pillow, tqdm);
torchvision, learn2learn and matplotlib are optional extras imported only where used.

Importing the package imports its two pipelines, ``meta`` and ``supervised``, which register
their checkpoint loaders in ``engine.PIPELINES`` (so ``engine.load_model`` reads any checkpoint);
a pipeline of your own registers itself the same way when you import it.
"""

__version__ = "0.1.0"

from . import meta, supervised  # noqa: E402, F401  (after __version__, which the CLI imports)
