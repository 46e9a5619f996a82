"""Training batches whose augmentations do not depend on the number of ranks or workers.

Every sample of every global batch gets its own seed, ``f(epoch seed, batch, position in the
global batch)``, and its train transform runs under that seed. So the same image in the same
slot is augmented identically whether the batch is produced by 1 process or N, by 0 or 8
data-loader workers — the property that makes DDP runs match single-process runs and makes
resumed runs exact.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..data import ClusterBatchSampler, ImageDataset


class SeededBatches:
    """Wraps a :class:`ClusterBatchSampler`: yields ``[(index, sample_seed), ...]`` per batch."""

    def __init__(self, sampler: ClusterBatchSampler, base_seed: int, batch_size: int, rank: int = 0):
        self.sampler, self.base_seed, self.batch_size, self.rank = sampler, base_seed, batch_size, rank

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        batches = self.sampler.batches()  # iters × (this rank's share)
        iters, local = batches.shape
        positions = np.arange(iters)[:, None] * self.batch_size + self.rank * local + np.arange(local)[None, :]
        seeds = (self.base_seed * 1_000_003) % 2**62 + positions  # int64, < 2**63
        for indices, batch_seeds in zip(batches.tolist(), seeds.tolist()):
            yield list(zip(indices, batch_seeds))


class SeededImageDataset(Dataset):
    """``dataset[(index, seed)]`` = ``ImageDataset[index]`` with the torch RNG seeded by ``seed``."""

    def __init__(self, dataset: ImageDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


def train_loader(sampler: ClusterBatchSampler, images: ImageDataset, seed: int, batch_size: int, rank: int = 0,
                 num_workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """This rank's P×K batches of one epoch: ``(images B×3×H×W, index B, ok B)``.

    ``sampler``: the epoch's :class:`ClusterBatchSampler` (this rank's share of every global batch
    of ``batch_size``); ``images``: the training images with the train transform; ``seed``: the
    epoch's seed (per-sample augmentation seeds and the workers' generator).
    """
    batches = SeededBatches(sampler, seed, batch_size, rank)
    return DataLoader(SeededImageDataset(images), batch_sampler=batches, num_workers=num_workers,
                      pin_memory=pin_memory, generator=torch.Generator().manual_seed(seed))
