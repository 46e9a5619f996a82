"""The ``ground_truth`` labeler: the training set's own identities as pseudo-labels.

It is the ceiling of every pseudo-label: the same objective, sampler and schedule fed the true
identities (``pseudo_labels.labeler=ground_truth``). Identities are renumbered 0..C-1 in order of
first appearance of their sorted ids; images without an identity (pid < 0) are outliers (-1).

    labels = GroundTruthLabeler()(features, identities=np.array([7, 7, 3, -1]))  # -> [1, 1, 0, -1]
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import DmireidError


class GroundTruthLabeler:
    """``labeler(features N×d, identities N int64) -> N int64`` labels: the identities, renumbered."""

    def __repr__(self) -> str:
        return "GroundTruthLabeler()"

    def __call__(self, features: torch.Tensor, identities: np.ndarray | None = None) -> np.ndarray:
        pids = None if identities is None else np.asarray(identities, dtype=np.int64)
        if pids is None or len(pids) != len(features) or not (pids >= 0).any():
            raise DmireidError("pseudo_labels.labeler=ground_truth: the training set has no identities "
                               "(every pid is -1); use a pseudo-labeler such as jaccard_dbscan")
        labels = np.full(len(pids), -1, dtype=np.int64)
        known = pids >= 0
        labels[known] = np.unique(pids[known], return_inverse=True)[1]
        return labels
