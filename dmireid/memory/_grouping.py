"""Vectorised grouping of a batch by cluster label (shared by every memory update).

One stable sort plus a single device sync per call (to learn the number of clusters present and
the largest per-cluster count); everything else stays on the device. No per-sample Python loop.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch


class BatchGroups(NamedTuple):
    """The valid (label >= 0) samples of a batch, grouped by cluster.

    Bv = number of valid samples, U = number of distinct clusters present.
    """

    order: torch.Tensor  # Bv int64: batch positions sorted by label, batch order kept within a cluster
    group: torch.Tensor  # Bv int64: group 0..U-1 of each sorted sample
    occurrence: torch.Tensor  # Bv int64: the sample is its cluster's j-th one in batch order
    labels: torch.Tensor  # U int64: cluster ids present, ascending
    start: torch.Tensor  # U int64: first sorted position of each group
    counts: torch.Tensor  # U int64: samples per group
    max_count: int  # largest count (0 when no valid sample)

    @property
    def num_groups(self) -> int:
        return self.labels.numel()


def as_labels(y, device: torch.device) -> torch.Tensor:
    """Labels (tensor, numpy array or list) -> 1-D int64 tensor on ``device``."""
    if isinstance(y, np.ndarray):
        y = torch.from_numpy(y)
    y = torch.as_tensor(y)
    return y.reshape(-1).to(device=device, dtype=torch.long, non_blocking=True)


def group_batch(y: torch.Tensor, num_classes: int | None = None) -> BatchGroups:
    """Group ``y`` (B int64, -1 = ignore) by label; raises ValueError for labels >= num_classes."""
    device = y.device
    n = y.numel()
    empty = torch.zeros(0, dtype=torch.long, device=device)
    if n == 0:
        return BatchGroups(empty, empty, empty, empty, empty, empty, 0)
    sorted_y, order = torch.sort(y, stable=True)
    pos = torch.arange(n, device=device)
    is_start = torch.ones(n, dtype=torch.bool, device=device)
    is_start[1:] = sorted_y[1:] != sorted_y[:-1]
    run_start = torch.cummax(torch.where(is_start, pos, torch.zeros_like(pos)), 0).values
    occurrence = pos - run_start
    valid = sorted_y >= 0
    stats = torch.stack([
        (~valid).sum(),
        (is_start & valid).sum(),
        torch.where(valid, occurrence + 1, torch.zeros_like(occurrence)).max(),
        sorted_y[-1],
    ])
    n_invalid, num_groups, max_count, max_label = stats.tolist()  # the one device sync
    if num_classes is not None and max_label >= num_classes:
        raise ValueError(f"label {max_label} out of range for a memory of {num_classes} clusters")
    order, sorted_y = order[n_invalid:], sorted_y[n_invalid:]
    occurrence, is_start = occurrence[n_invalid:], is_start[n_invalid:]
    group = torch.cumsum(is_start.long(), 0) - 1
    counts = torch.zeros(num_groups, dtype=torch.long, device=device).scatter_add_(0, group, torch.ones_like(group))
    start = torch.cumsum(counts, 0) - counts
    return BatchGroups(order, group, occurrence, sorted_y[start], start, counts, int(max_count))
