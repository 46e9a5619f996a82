"""Seeds of a run: the global RNGs at its start and one seed per epoch (so a resumed epoch repeats exactly)."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of every random stream of ``epoch`` (so a resumed epoch repeats exactly)."""
    return seed * 1_000_003 + epoch
