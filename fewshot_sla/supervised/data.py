"""Data of the supervised pipeline: a run's training, validation and test images and the
preprocessing of its augmentation recipe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..config import ConfigError
from ..data.augment import BatchAugment, get_augmentation
from ..data.base import holdout_per_class
from ..data.spec import ImageSpec
from .config import LDAM_DRW_MEAN, LDAM_DRW_STD, SupervisedConfig
from .longtail import class_counts, longtail_counts, longtail_indices

__all__ = ["SupervisedData", "prepare_data", "load_data", "preprocessors"]


@dataclass
class SupervisedData:
    """Training, validation and test images (uint8 ``[n, C, H, W]``) with int64 labels.

    ``class_counts`` are the training-set counts (after the long-tailed subsampling);
    validation tensors are empty without a validation set (``validation_size = 0``).
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    class_names: list[str]
    class_counts: list[int]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_size(self) -> int:
        return int(self.train_images.shape[-1])

    @property
    def channels(self) -> int:
        return int(self.train_images.shape[1])


def prepare_data(train: Any, test: Any | None, cfg: SupervisedConfig) -> SupervisedData:
    """Subsample the long-tailed training set (from the full set, as Cao et al.: ``n_max`` is a class's
    full count), or hold out ``validation_size / C`` images per class with ``split_seed``; ``test`` is
    ``None`` for a few-shot benchmark. ``train``/``test`` hold ``images``, ``labels``, ``class_names``."""
    images, labels = train.images, torch.as_tensor(train.labels).long()
    names = list(train.class_names)
    C = len(names)
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"training images must be uint8 [n, C, H, W], got {images.dtype} {tuple(images.shape)}")
    val_images, val_labels = images[:0], labels[:0]
    val_size = cfg.validation_size
    if cfg.long_tailed:  # the config refuses val_size > 0 here: the profile needs every image of class 0
        target = longtail_counts(min(class_counts(labels, C)), C, cfg.imbalance_ratio)
        keep = torch.from_numpy(longtail_indices(labels, target, cfg.imbalance_seed))
        images, labels = images[keep], labels[keep]
    elif val_size > 0:
        per_class = val_size // C
        if per_class < 1:
            raise ConfigError(f"--val-size {val_size} is smaller than the number of classes ({C}); "
                              f"pass at least {C} or 0 for no validation")
        tr, va = holdout_per_class(labels, per_class, cfg.split_seed, "--val-size")
        val_images, val_labels = images[torch.from_numpy(va)], labels[torch.from_numpy(va)]
        images, labels = images[torch.from_numpy(tr)], labels[torch.from_numpy(tr)]
    if test is None:
        test_images, test_labels = images[:0], labels[:0]
    elif len(test.class_names) != C:
        raise ValueError(f"train has {C} classes but test has {len(test.class_names)}; use splits of one dataset")
    else:
        test_images, test_labels = test.images, torch.as_tensor(test.labels).long()
    return SupervisedData(train_images=images, train_labels=labels, val_images=val_images, val_labels=val_labels,
                          test_images=test_images, test_labels=test_labels, class_names=names,
                          class_counts=class_counts(labels, C))


def load_data(cfg: SupervisedConfig, need_train: bool = True) -> SupervisedData:
    """Load ``cfg.dataset`` from ``cfg.data_root`` (train and test) and :func:`prepare_data`.

    A few-shot benchmark contributes its training split (its classes are the base classes of
    RFS's pretraining) and no test images. ``need_train=False`` loads the test split alone (the
    training and validation tensors are then empty and ``class_counts`` all zero).
    """
    from ..data import get_dataset

    kw = dict(cfg.dataset_options, image_size=cfg.image_size, download=cfg.download)
    if cfg.cache_dir:
        from ..writable import check_writable_dir

        check_writable_dir(cfg.cache_dir, "the dataset cache", "choose another --cache-dir")  # before decoding
        kw["cache_dir"] = cfg.cache_dir

    def split(name: str):
        return get_dataset(cfg.dataset, cfg.data_root, name, **kw)

    if cfg.fewshot_dataset:
        if not need_train:
            raise ValueError(f"{cfg.dataset} is a few-shot benchmark: its test classes are not the training "
                             "classes; evaluate episodes with fewshot-sla eval --checkpoint RUN")
        return prepare_data(split("train"), None, cfg)
    test = split("test")
    if need_train:
        return prepare_data(split("train"), test, cfg)
    empty_x, empty_y = test.images[:0], torch.as_tensor(test.labels)[:0].long()
    names = list(test.class_names)
    return SupervisedData(empty_x, empty_y, empty_x, empty_y, test.images, torch.as_tensor(test.labels).long(),
                          names, [0] * len(names))


def preprocessors(cfg: SupervisedConfig, image_size: int, channels: int | None = None,
                  images: torch.Tensor | None = None) -> tuple[BatchAugment, BatchAugment]:
    """(training augmentation, evaluation normalisation) of ``cfg.augment``.

    Images whose channels differ from the dataset's registered ones (an image folder, say) are
    normalised with their own statistics (``channel_stats(images)``; ``sla``: 0.5 and 0.5 per channel).
    """
    from ..data import dataset_info
    from ..data.base import channel_stats

    info = dataset_info(cfg.dataset)
    recipe, mean, std = cfg.augment, None, None
    if cfg.augment == "ldam":  # crop + flip, normalised with LDAM-DRW's constants
        recipe, mean, std = "standard", LDAM_DRW_MEAN, LDAM_DRW_STD
    elif channels is not None and (cfg.dataset == "folder" or channels != info.channels):
        mean, std = ((0.5,) * channels,) * 2 if cfg.augment == "sla" else channel_stats(images)
    train_aug = get_augmentation(cfg.dataset, recipe, image_size=image_size, mean=mean, std=std)
    c = train_aug.config
    return train_aug, ImageSpec(channels or info.channels, image_size, c.mean, c.std).normalise
