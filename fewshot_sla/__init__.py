"""fewshot-sla: few-shot and supervised learning with Self-supervised Label Augmentation.

Lee, Hwang & Shin, "Self-supervised Label Augmentation via Input Transformations",
ICML 2020. Importing the package needs torch alone; torchvision, learn2learn and
matplotlib are optional extras imported only where used.
"""

__version__ = "0.1.0"
