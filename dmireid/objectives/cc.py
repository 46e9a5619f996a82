"""Cluster Contrast (spec §4.1): one proxy per cluster, cross-entropy against the proxies."""

from __future__ import annotations

import torch

from ..memory import ClusterProxies, cluster_centroids
from .base import Objective, ObjectiveContext, register_objective


class ClusterContrast(Objective):
    """``method=cc``: a :class:`~dmireid.memory.ClusterProxies` memory initialised with the centroids."""

    def __init__(self, memory: ClusterProxies):
        super().__init__()
        self.memory = memory

    @classmethod
    def describe(cls, settings, options, stage) -> str:
        return f"method cc: one proxy per cluster, update={settings.cc_update}"

    @classmethod
    def build(cls, context: ObjectiveContext) -> "ClusterContrast":
        s = context.settings
        centroids = cluster_centroids(context.features, context.labels).to(context.device)
        return cls(ClusterProxies(centroids, update=s.cc_update, momentum=s.momentum, temperature=s.temperature))

    def loss(self, f: torch.Tensor, y: torch.Tensor):
        return self.memory.loss(f, y), {}

    @torch.no_grad()
    def update(self, f, f_momentum, y) -> None:
        self.memory.update(f, y)


register_objective("cc", ClusterContrast)
