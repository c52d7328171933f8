"""Datasets as in-memory uint8 tensors, one entry point (:func:`get_dataset`), and batched augmentation.

>>> ds = get_dataset("omniglot", "../shared/data", "train")   # doctest: +SKIP
>>> ds.images.shape, ds.labels.shape                           # doctest: +SKIP
(torch.Size([16040, 1, 28, 28]), torch.Size([16040]))
"""

from .augment import AugmentConfig, BatchAugment, get_augmentation
from .base import (
    DATASET_INFO,
    DataError,
    DatasetInfo,
    DatasetNotFoundError,
    FewShotDataset,
    ImageDataset,
)
from .download import DownloadError
from .registry import dataset_info, get_dataset, list_datasets, register_dataset

__all__ = ["get_dataset", "list_datasets", "register_dataset", "dataset_info", "ImageDataset", "FewShotDataset",
           "DatasetInfo", "DATASET_INFO", "DataError", "DatasetNotFoundError", "DownloadError", "AugmentConfig",
           "BatchAugment", "get_augmentation"]
