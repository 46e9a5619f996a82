"""Datasets, synthetic data, transforms, image reading and the P×K cluster sampler."""

from .datasets import ReIDDataset, Sample, load_dataset

__all__ = ["Sample", "ReIDDataset", "load_dataset"]
