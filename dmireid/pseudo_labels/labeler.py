"""Labelers: unit features -> pseudo-identities. One object serves training and ``dmireid cluster``.

    labeler = build_labeler("jaccard_dbscan", k1=30, k2=6, eps=0.6, min_samples=4)
    labels = labeler(features)        # N×d unit rows -> N int64 labels, -1 = outlier, 0..C-1

A labeler is any callable ``labeler(features) -> labels`` (see :class:`Labeler`); one that also
takes ``cameras=`` (N int64 camera ids) or ``identities=`` (N int64 true pids, -1 unknown) as
keywords gets them from the trainer (:func:`call_labeler`). Register a new
one (k-means, InfoMap, ...) with :func:`register_labeler` and select it with
``pseudo_labels.labeler=NAME`` (its own settings in ``pseudo_labels.options``). The trainer calls
a labeler on rank 0 only and broadcasts the labels, unless the labeler sets ``collective = True``
(then every rank calls it and rank 0's result is used): ``JaccardDBSCAN`` is collective, its kNN
search is split over the ranks.
"""

from __future__ import annotations

import inspect
import logging
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from .. import distributed as dist
from ..errors import DmireidError
from ..registry import Registry, check_options
from .camera_jaccard import camera_jaccard_distance
from .clustering import check_eps, cluster
from .ground_truth import GroundTruthLabeler
from .infomap import InfomapLabeler
from .jaccard import jaccard_distance
from .sharded import share_from_main

log = logging.getLogger(__name__)

LABELERS: Registry = Registry("labeler", "pseudo_labels.labeler")


@runtime_checkable
class Labeler(Protocol):
    """``labeler(features N×d float32 unit rows) -> N int64 labels`` (-1 outlier, clusters 0..C-1)."""

    def __call__(self, features: torch.Tensor) -> np.ndarray: ...


# the settings a labeler factory gets when it names them, and the config key of each
SETTINGS = {**{key: f"pseudo_labels.{key}" for key in ("k1", "k2", "eps", "min_samples", "knn_backend",
                                                        "camera_balance", "k1_intra", "k1_inter", "k2_intra",
                                                        "k2_inter")},
            "progress": "the progress setting", "device": "the run's device"}


def register_labeler(name: str, factory=None, *, overwrite: bool = False):
    """Register a labeler class/factory under ``name`` (also usable as ``@register_labeler(name)``).

    The factory is called with the ``pseudo_labels`` settings it accepts by name (:data:`SETTINGS`:
    ``k1``, ``k2``, ``eps``, ``min_samples``, ``knn_backend``, the camera-balance keys, ``progress``,
    ``device``) plus ``pseudo_labels.options``.
    """
    return LABELERS.register(name, factory, overwrite=overwrite)


class JaccardDBSCAN:
    """k-reciprocal Jaccard distance (spec §3) + DBSCAN (spec §1.3): the method's labeler.

    ``k1`` is capped at N and ``k2`` at ``k1`` by :func:`~dmireid.pseudo_labels.jaccard_distance`
    (so small folders work); the Jaccard graph keeps only pairs ≤ ``eps`` (all DBSCAN needs). Collective: under ``torch.distributed`` every rank
    calls it with the same features, each searches a shard of the kNN rows
    (:mod:`.sharded`), rank 0 computes the graph and DBSCAN, and every rank returns rank 0's
    labels. Labels do not depend on the number of ranks. ``device``: where the torch kNN backend searches (``None``: the features' device;
    faiss uses the current CUDA device when it has GPUs).

    ``camera_balance``: the camera-aware Jaccard distance of CA-Jaccard (:mod:`.camera_jaccard`,
    lists ``k1_intra``/``k1_inter``, query expansion ``k2_intra``/``k2_inter``; k1/k2 unused) on
    the training cameras (``cameras=``), computed by rank 0 alone.
    """

    collective = True

    def __init__(self, k1: int = 30, k2: int = 6, eps: float = 0.6, min_samples: int = 4,
                 knn_backend: str = "auto", progress: bool = True, device: str | torch.device | None = None,
                 camera_balance: bool = False, k1_intra: int = 5, k1_inter: int = 20, k2_intra: int = 3,
                 k2_inter: int = 3):
        check_eps(eps)
        self.camera_balance = bool(camera_balance)
        self.camera_lists = {"k1_intra": int(k1_intra), "k1_inter": int(k1_inter), "k2_intra": int(k2_intra),
                             "k2_inter": int(k2_inter)}
        self.k1, self.k2, self.eps, self.min_samples = int(k1), int(k2), float(eps), int(min_samples)
        self.knn_backend, self.progress = knn_backend, progress
        self.device = None if device is None else torch.device(device)
        self.timings: dict[str, float] = {}  # seconds per phase of the last call

    def __repr__(self) -> str:
        balance = f", camera_balance {self.camera_lists}" if self.camera_balance else ""
        return (f"JaccardDBSCAN(k1={self.k1}, k2={self.k2}, eps={self.eps}, min_samples={self.min_samples}, "
                f"knn_backend={self.knn_backend}{balance})")

    def __call__(self, features: torch.Tensor, cameras: np.ndarray | None = None) -> np.ndarray:
        n = len(features)
        if n < 2:
            raise DmireidError(f"clustering needs at least 2 images, got {n}")
        self.timings = {}
        if self.device is not None:
            features = torch.as_tensor(features).to(self.device)
        if self.camera_balance:
            return share_from_main(self.camera_balanced(features, cameras))
        distance = jaccard_distance(features, k1=self.k1, k2=self.k2, max_distance=self.eps, knn_backend=self.knn_backend,
                                    progress=self.progress, collective=True, timings=self.timings)
        if distance is None:  # not rank 0: it receives rank 0's labels below
            labels = np.full(n, -1, dtype=np.int64)
        else:
            labels = np.asarray(cluster(distance, eps=self.eps, min_samples=self.min_samples), dtype=np.int64)
        return share_from_main(labels)

    def camera_balanced(self, features: torch.Tensor, cameras: np.ndarray | None) -> np.ndarray:
        """Labels from the CA-Jaccard distance on rank 0 (-1 everywhere on the other ranks)."""
        if cameras is None:
            raise DmireidError("pseudo_labels.camera_balance=true needs the images' camera ids")
        if not dist.is_main():
            return np.full(len(features), -1, dtype=np.int64)
        distance = camera_jaccard_distance(features, cameras, max_distance=self.eps, knn_backend=self.knn_backend,
                                           **self.camera_lists)
        return np.asarray(cluster(distance, eps=self.eps, min_samples=self.min_samples), dtype=np.int64)


register_labeler("jaccard_dbscan", JaccardDBSCAN)
register_labeler("ground_truth", GroundTruthLabeler)
register_labeler("infomap", InfomapLabeler)


def call_labeler(labeler: Labeler, features: torch.Tensor, cameras: np.ndarray,
                 identities: np.ndarray, tracklets: np.ndarray | None = None,
                 frames: np.ndarray | None = None) -> np.ndarray:
    """``labeler(features)`` plus the keywords among ``cameras`` / ``identities`` / ``tracklets`` /
    ``frames`` its ``__call__`` names.

    cameras, identities: N int64 (camera ids from 0; true pids, -1 where unknown); tracklets, frames:
    N int64 (-1 unknown) or None when the dataset has none (then not passed). A labeler written
    before these existed keeps its one-argument call.
    """
    try:
        params = inspect.signature(labeler).parameters
    except (TypeError, ValueError):
        params = {}
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    given = (("cameras", cameras), ("identities", identities), ("tracklets", tracklets), ("frames", frames))
    extra = {name: value for name, value in given if value is not None or name in ("cameras", "identities")
             if takes_any or name in params}
    return labeler(features, **extra)


def check_labeler_options(name: str, options: dict) -> None:
    """``pseudo_labels.options`` against the factory of labeler ``name`` (one line naming the key)."""
    check_options(LABELERS.get(name), options, kind="labeler", name=name, key="pseudo_labels.options",
                  given=SETTINGS)


def build_labeler(name: str = "jaccard_dbscan", options: dict | None = None, **settings) -> Labeler:
    """The registered labeler ``name`` built with the ``settings`` its factory accepts + ``options``
    (checked first: a bad one is a one-line error, :func:`check_labeler_options`).

    ``settings`` are among :data:`SETTINGS`; those the factory does not name are dropped, so a
    plug-in labeler need not accept k1/k2. (:func:`dmireid.build.labeler` calls
    :func:`construct_labeler`: a config's options were checked when it was read.)
    """
    check_labeler_options(name, dict(options or {}))
    return construct_labeler(name, options, **settings)


def construct_labeler(name: str, options: dict | None = None, **settings) -> Labeler:
    """:func:`build_labeler` without the options check (for options already checked)."""
    factory = LABELERS.get(name)
    options = dict(options or {})
    try:
        params = inspect.signature(factory).parameters
        takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
        accepted = {k: v for k, v in settings.items() if takes_any or k in params}
    except (TypeError, ValueError):  # no signature (a C callable): pass everything
        accepted = dict(settings)
    return factory(**accepted, **options)
