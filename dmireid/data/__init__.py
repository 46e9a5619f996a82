"""Datasets (a registry of loaders), synthetic data, transforms, image reading and the P×K sampler.

    ds = load_dataset("market1501", "/data")            # ReIDDataset: train / query / gallery
    register_dataset("my_set", load_my_set)             # load_my_set(root, **options) -> ReIDDataset
    train = ImageDataset(ds.train, build_train_transform(256, 128))
    sampler = ClusterBatchSampler(labels, [c for _, _, c in ds.train], 16, 256, 200, seed=1)
"""

from . import cuhk as _cuhk_loaders  # noqa: F401  (registers cuhk03, cuhk01)
from . import datasets as _builtin_loaders  # noqa: F401  (registers market1501, msmt17, ...)
from . import tracklets as _tracklet_loader  # noqa: F401  (registers tracklets)
from .catalog import DATASETS, check_dataset_options, dataset_options, find_dataset, load_dataset, register_dataset
from .images import IMAGE_EXTENSIONS, ImageDataset, check_images, read_image
from .sampler import ClusterBatchSampler
from .samples import ReIDDataset, Sample
from .synthetic import default_synthetic_root, make_synthetic
from .transforms import IMAGENET_MEAN, IMAGENET_STD, build_test_transform, build_train_transform

__all__ = [
    "Sample", "ReIDDataset", "load_dataset", "make_synthetic", "default_synthetic_root", "check_images",
    "read_image", "ImageDataset", "build_train_transform", "build_test_transform", "IMAGENET_MEAN",
    "IMAGENET_STD", "ClusterBatchSampler", "DATASETS", "register_dataset", "find_dataset", "dataset_options",
    "check_dataset_options", "IMAGE_EXTENSIONS",
]
