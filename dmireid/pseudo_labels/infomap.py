"""InfoMap labeler (``pseudo_labels.labeler=infomap``): Cluster Contrast's second labeler.

Semantics of alibaba/cluster-contrast-reid ``clustercontrast/utils/infomap_cluster.py``
(``get_dist_nbr`` + ``cluster_by_infomap``; citations in docs/recipe_semantics.md §8):

1. kNN lists of length ``k`` (self included) on the unit features; similarity = cosine.
2. For each image, a directed link to each neighbour (self skipped) in list order, weight = the
   cosine similarity, while it is >= ``min_sim`` (the first neighbour below stops the row).
3. Two-level directed InfoMap (``--two-level --directed``) on those links.
4. Images without any link are singleton clusters; every cluster of at most ``outlier_size``
   images (CC's ``cluster_num``, set from its ``--k2`` = 4) becomes outliers (-1); the others
   are numbered 0..C-1 in order of InfoMap's module ids.

The kNN search is :func:`dmireid.pseudo_labels.sharded.knn` (N×k lists, no dense N×N). The
``infomap`` package is an optional extra: ``pip install "dmireid[infomap]"``.
"""

from __future__ import annotations

import warnings

import logging

import numpy as np
import torch

from ..errors import DmireidError
from .sharded import knn

log = logging.getLogger(__name__)


def _import_infomap():
    try:
        import infomap
    except ImportError:
        raise DmireidError('pseudo_labels.labeler=infomap needs the infomap package: pip install "dmireid[infomap]" '
                           '(or pip install infomap)') from None
    return infomap


def knn_links(distances: np.ndarray, indices: np.ndarray, min_sim: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Directed links of step 2 from kNN lists (N×k squared distances of unit rows, self first).

    Returns ``(sources L, targets L, weights L float64)`` in row order.
    """
    n = indices.shape[0]
    sims = 1.0 - distances[:, 1:].astype(np.float64) / 2.0  # cosine of unit rows
    others = indices[:, 1:]
    ok = np.logical_and.accumulate((sims >= min_sim) | (others == np.arange(n)[:, None]), axis=1)
    keep = ok & (others != np.arange(n)[:, None])
    rows = np.repeat(np.arange(n, dtype=np.int64), keep.sum(1))
    return rows, others[keep].astype(np.int64), sims[keep]


def infomap_modules(sources: np.ndarray, targets: np.ndarray, weights: np.ndarray, n: int) -> np.ndarray:
    """N module ids (>= 0) of two-level directed InfoMap on the links; -1 for nodes without a link."""
    infomap = _import_infomap()
    modules = np.full(n, -1, dtype=np.int64)
    if len(sources) == 0:
        return modules
    im = infomap.Infomap("--two-level --directed --silent")
    for s, t, w in zip(sources.tolist(), targets.tolist(), weights.tolist()):
        im.add_link(s, t, w)
    im.run()
    with warnings.catch_warnings():  # get_modules is deprecated in infomap 2.x, but Result.modules() walks a
        warnings.simplefilter("ignore")  # SWIG iterator that crashes the process once faiss (also SWIG) is loaded
        found = im.get_modules()
    nodes = np.fromiter(found.keys(), dtype=np.int64, count=len(found))
    modules[nodes] = np.fromiter(found.values(), dtype=np.int64, count=len(found))
    return modules


def labels_from_modules(modules: np.ndarray, outlier_size: int) -> np.ndarray:
    """Step 4: linkless nodes (-1) become singletons, clusters of <= ``outlier_size`` become -1,
    the rest are renumbered 0..C-1 by ascending module id."""
    n = len(modules)
    top = int(modules.max()) + 1 if n else 0
    single = modules < 0
    full = modules.copy()
    full[single] = top + np.arange(int(single.sum()))
    ids, inverse, counts = np.unique(full, return_inverse=True, return_counts=True)
    big = counts > outlier_size
    new_id = np.where(big, np.cumsum(big) - 1, -1)
    return new_id[inverse].astype(np.int64)


class InfomapLabeler:
    """kNN + InfoMap (module docstring). Options (``pseudo_labels.options``), defaults = CC's
    example script: ``k`` = 15 (its ``--k1``), ``min_sim`` = 0.5 (its ``--eps``), ``outlier_size``
    = 4 (its ``--k2``)."""

    def __init__(self, k: int = 15, min_sim: float = 0.5, outlier_size: int = 4, knn_backend: str = "auto",
                 progress: bool = True, device: str | torch.device | None = None):
        if isinstance(k, bool) or not isinstance(k, int) or k < 2:
            raise DmireidError(f"pseudo_labels.options.k must be an integer >= 2, got {k!r}")
        if isinstance(min_sim, bool) or not isinstance(min_sim, (int, float)) or not -1 <= min_sim <= 1:
            raise DmireidError(f"pseudo_labels.options.min_sim must be a number in [-1, 1], got {min_sim!r}")
        if isinstance(outlier_size, bool) or not isinstance(outlier_size, int) or outlier_size < 0:
            raise DmireidError(f"pseudo_labels.options.outlier_size must be an integer >= 0, got {outlier_size!r}")
        _import_infomap()  # one line now rather than after the first extraction
        self.k, self.min_sim, self.outlier_size = int(k), float(min_sim), int(outlier_size)
        self.knn_backend, self.progress = knn_backend, progress
        self.device = None if device is None else torch.device(device)

    def __repr__(self) -> str:
        return f"InfomapLabeler(k={self.k}, min_sim={self.min_sim}, outlier_size={self.outlier_size})"

    def __call__(self, features: torch.Tensor) -> np.ndarray:
        n = len(features)
        if n < 2:
            raise DmireidError(f"clustering needs at least 2 images, got {n}")
        x = torch.as_tensor(features)
        if self.device is not None:
            x = x.to(self.device)
        distances, indices = knn(x, min(self.k, n), backend=self.knn_backend)
        sources, targets, weights = knn_links(distances, indices, self.min_sim)
        labels = labels_from_modules(infomap_modules(sources, targets, weights, n), self.outlier_size)
        log.info("infomap: %d links, %d clusters, %d outliers", len(sources), int(labels.max()) + 1,
                 int((labels < 0).sum()))
        return labels
