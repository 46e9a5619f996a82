"""Datasets, synthetic data, transforms, image reading and the P×K cluster sampler.

    ds = load_dataset("market1501", "/data")            # ReIDDataset: train / query / gallery
    train = ImageDataset(ds.train, build_train_transform(256, 128))
    sampler = ClusterBatchSampler(labels, [c for _, _, c in ds.train], 16, 256, 200, seed=1)
"""

from .datasets import ReIDDataset, Sample, load_dataset
from .images import ImageDataset, check_images, read_image
from .sampler import ClusterBatchSampler
from .synthetic import default_synthetic_root, make_synthetic
from .transforms import IMAGENET_MEAN, IMAGENET_STD, build_test_transform, build_train_transform

__all__ = [
    "Sample", "ReIDDataset", "load_dataset", "make_synthetic", "default_synthetic_root", "check_images",
    "read_image", "ImageDataset", "build_train_transform", "build_test_transform", "IMAGENET_MEAN",
    "IMAGENET_STD", "ClusterBatchSampler",
]
