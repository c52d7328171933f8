"""A trained checkpoint as an N-way classifier of your own images::

    from fewshot_sla.predict import FewShotClassifier
    clf = FewShotClassifier.from_checkpoint("runs/omniglot_sla")     # run dir or .pt, either pipeline
    clf.fit("my_support")                 # one subfolder per class (or (image, label) pairs)
    probs = clf.predict_proba(["q1.png", "q2.png"])                   # [2, N], columns = clf.classes_
    clf.predict(["q1.png", "q2.png"])     # class names

Inferences and their defaults are :mod:`fewshot_sla.inferences`' table (a supervised checkpoint's
features are solved with ``head``, protonet by default); shots may differ between classes. The
head runs in float64 on the float32 features, so a query's probabilities do not depend on the
batch it comes in. A ``maml``/``fomaml``/``anil`` checkpoint fits by its inner loop on the whole
support set (``inner_steps_test`` steps); its BatchNorm normalises each batch of ``batch_size``
queries with that batch's statistics (transductive, as in training and ``eval``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .. import sla
from ..data.spec import ImageSpec
from ..engine.checkpoint import LoadedModel, load_model
from ..heads import get_head
from ..inferences import episode_table, head_logits, inferences, reported
from ..seeding import seeded_generator
from ..support_augment import STREAM, augment_copies, training_recipe
from ..transforms import TransformSet, get_transform_set
from .preprocess import ImageInput, preprocess_images
from .support import SupportSet, read_support

__all__ = ["FewShotClassifier"]


class FewShotClassifier:
    """An N-way classifier from a trained checkpoint, fitted to a support set; after :meth:`fit`,
    ``classes_`` (the columns of :meth:`predict_proba`) and ``shots_`` (images per class)."""

    def __init__(self, loaded: LoadedModel, inference: str | None = None, head: str | None = None,
                 head_options: dict[str, Any] | None = None, batch_size: int = 64, support_augment: int = 0,
                 augment_seed: int = 0) -> None:
        self.loaded = loaded
        self.pipeline = loaded.pipeline
        self.mode = str(loaded.config.mode)
        self.spec = ImageSpec.from_checkpoint(loaded.data, loaded.config)
        if self.spec.channels not in (1, 3):
            raise ValueError(f"the checkpoint's model takes {self.spec.channels}-channel images; only 1 or 3 are "
                             "supported")
        model = loaded.model
        self.backbone: nn.Module = model.backbone
        self.device = next(model.parameters()).device
        table = episode_table(self.pipeline)
        supported = inferences(table, self.mode)
        self.inference = inference or reported(table, self.mode)
        if self.inference not in supported:
            raise ValueError(f"inference {self.inference!r} is not available for a {self.pipeline} checkpoint "
                             f"trained with mode {self.mode!r}; choose one of {', '.join(supported)}")
        # a gradient-based learner (maml, fomaml, anil): fit = the inner loop on the support set
        self.adapts = hasattr(model, "adapted_network")
        self._adapted: tuple[Tensor, Tensor] | None = None  # the adapted classifier's weight [K, D] and bias [K]
        if self.adapts:
            self.transforms = model.transforms
            self.head_name, self.head, self.head_kwargs, self.scale = str(model.learner), model, {}, 1.0
            if head is not None or head_options:
                raise ValueError(f"a {model.learner} checkpoint adapts its own classifier to the support set; "
                                 "drop --head and --head-options")
        elif self.pipeline == "meta":
            self.transforms: TransformSet = model.transforms
            own = head is None or head == loaded.config.head
            self.head_name = str(loaded.config.head if head is None else head)
            self.head: nn.Module = model.head if own and not head_options else get_head(self.head_name,
                                                                                        **(head_options or {}))
            self.head_kwargs = dict(model.head_kwargs) if own else {}
            scale = model.distill_scale if self.inference == "distilled" else model.scale
            self.scale = float(scale.detach())
        else:
            self.transforms = get_transform_set(loaded.data.get("transforms", "none") if "single" in supported
                                                else "none")
            self.head_name = head or "protonet"
            self.head = get_head(self.head_name, **(head_options or {}))
            self.head_kwargs = {}
            self.scale = 1.0
        self.batch_size = int(batch_size)
        if support_augment < 0:
            raise ValueError(f"support_augment must be at least 0 (0: off), got {support_augment}")
        self.support_augment, self.augment_seed = int(support_augment), int(augment_seed)
        self.support_recipe = training_recipe(self.pipeline, loaded.config)
        self.classes_: list[Any] = []
        self.shots_: list[int] = []
        self._support_features: Tensor | None = None  # [1, S*M', D], float64 (the head runs in float64)
        self._support_labels: Tensor | None = None  # [1, S*M'] (joint labels when expanded)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu", inference: str | None = None,
                        head: str | None = None, head_options: dict[str, Any] | None = None,
                        batch_size: int = 64, support_augment: int = 0, augment_seed: int = 0) -> FewShotClassifier:
        """Load a checkpoint (a run directory or a ``.pt`` file of either pipeline); ``support_augment``
        K: fit to K copies of each support image through the training augmentation (RFS's protocol,
        :mod:`fewshot_sla.support_augment`, drawn from ``augment_seed``)."""
        return cls(load_model(path, device), inference, head, head_options, batch_size, support_augment,
                   augment_seed)

    # -- the method --------------------------------------------------------------------------
    @property
    def M(self) -> int:
        """Views per image this inference embeds (M for single/aggregated, else 1)."""
        return self.transforms.M if self.inference in ("single", "aggregated") else 1

    @property
    def n_way(self) -> int:
        return len(self.classes_)

    @torch.no_grad()
    def embed(self, x: Tensor, views: bool = True) -> Tensor:
        """Features of preprocessed images ``[B, C, H, W]`` -> ``[B*M, D]`` (row ``b*M + j`` is view j
        of image b; M = :attr:`M`, or 1 with ``views=False``), in chunks of ``batch_size`` images."""
        out = []
        for chunk in x.split(self.batch_size):
            chunk = chunk.to(self.device)
            if views and self.M > 1:
                chunk = self.transforms(chunk)
            out.append(self.backbone(chunk).float())
        return torch.cat(out)

    def _solve(self, fq: Tensor) -> Tensor:
        """Query features (``[Q*M, D]`` for aggregated, else ``[Q, D]``) -> N-way logits ``[Q, N]``."""
        n, m = self.n_way, self.M
        if self._adapted is not None:
            w, b = self._adapted
            return head_logits(self.inference, (fq @ w.t() + b)[None], m)[0]
        with torch.no_grad():
            logits = self.scale * self.head(fq[None].double(), self._support_features, self._support_labels, n * m,
                                            **self.head_kwargs).float()
        return head_logits(self.inference, logits, m)[0]

    # -- the scikit-learn-like API -----------------------------------------------------------
    def fit(self, support: Any, labels: Sequence[Any] | None = None, skip_bad: bool = False) -> FewShotClassifier:
        """Fit to a support set: a folder (one subfolder per class), a list of ``(image, label)``
        pairs, or images (paths, PIL images, tensors ``[C, H, W]``, a batch ``[S, C, H, W]``) with
        ``labels``. Shots may differ between classes."""
        return self.fit_pixels(read_support(support, labels, self.spec, skip_bad))

    def fit_pixels(self, support: SupportSet) -> FewShotClassifier:
        """Fit to an already read :class:`~fewshot_sla.predict.support.SupportSet`."""
        self.classes_, self.shots_ = list(support.classes), support.shots
        x, y = self.spec.normalise(support.pixels), support.labels
        if self.support_augment:  # the one "episode" of predict: episode 0 of augment_seed
            x, y = augment_copies(support.pixels, y, self.support_augment, self.spec.augmentation(self.support_recipe),
                                  seeded_generator(self.augment_seed, STREAM, 0))
        if self.adapts:  # the inner loop on the whole support set (its views: joint labels y*M + j)
            x, y = x.to(self.device), y.to(self.device)
            if self.M > 1:
                x, y = self.transforms(x), sla.joint_labels(y, self.M)
            self.backbone, w, b = self.loaded.model.adapted_network(x, y, self.n_way * self.M)
            self._adapted = (w, b)
            return self
        self._support_features = self.embed(x)[None].double()
        y = y.to(self.device)
        self._support_labels = (sla.joint_labels(y, self.M) if self.M > 1 else y)[None]
        return self

    def preprocess(self, images: Sequence[ImageInput] | Tensor) -> Tensor:
        """Images of any size and mode -> model inputs ``[B, C, S, S]`` (:func:`preprocess_images`)."""
        return preprocess_images(images, self.spec)

    def logits(self, x: Tensor) -> Tensor:
        """N-way logits ``[B, N]`` of preprocessed images ``[B, C, S, S]``."""
        self._check_fitted()
        views = self.inference == "aggregated"
        return torch.cat([self._solve(self.embed(chunk, views)) for chunk in x.split(self.batch_size)]).cpu()

    def predict_proba(self, queries: Sequence[ImageInput] | Tensor) -> Tensor:
        """Class probabilities ``[n, N]`` (columns in the order of ``classes_``)."""
        self._check_fitted()
        return torch.softmax(self.logits(self.preprocess(queries)), dim=-1)

    def predict(self, queries: Sequence[ImageInput] | Tensor) -> list[Any]:
        """The most probable class of each query."""
        return [self.classes_[i] for i in self.predict_proba(queries).argmax(-1).tolist()]

    def _check_fitted(self) -> None:
        if self._support_features is None and self._adapted is None:
            raise ValueError("the classifier is not fitted; call fit(support) first")
