"""Use a trained checkpoint on your own images: one preprocessing function
(:func:`preprocess_images`), a classifier API (:class:`FewShotClassifier`), and export of a
fitted classifier to TorchScript/ONNX (:mod:`fewshot_sla.predict.export`).

``fewshot-sla predict`` and ``fewshot-sla export`` (:mod:`fewshot_sla.predict.cli`) drive them.
"""

from .classifier import FewShotClassifier
from .preprocess import ImageSpec, image_pixels, list_images, preprocess_images

__all__ = ["FewShotClassifier", "ImageSpec", "image_pixels", "list_images", "preprocess_images"]
