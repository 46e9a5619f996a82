"""Cluster Contrast (spec §4.1): one proxy per cluster, cross-entropy against the proxies.

With ``memory.camera_proxies`` CAP's camera-aware terms are added (:mod:`.camera`).
"""

from __future__ import annotations

import torch

from ..memory import ClusterProxies, cluster_centroids
from .base import Objective, ObjectiveContext, register_objective
from .camera import CameraTerms
from .camera_local import CameraLocalMask, camera_local_mask


class ClusterContrast(Objective):
    """``method=cc``: a :class:`~dmireid.memory.ClusterProxies` memory initialised with the centroids."""

    def __init__(self, memory: ClusterProxies, camera: CameraTerms | None = None,
                 camera_local: CameraLocalMask | None = None):
        super().__init__()
        self.memory = memory
        self.camera, self.camera_local = camera, camera_local
        self.camera_memory = camera.memory if camera is not None else None
        self.needs_cameras = camera is not None or camera_local is not None

    @classmethod
    def describe(cls, settings, options, stage) -> str:
        return f"method cc: one proxy per cluster, update={settings.cc_update}{CameraTerms.describe(settings)}"

    @classmethod
    def build(cls, context: ObjectiveContext) -> "ClusterContrast":
        s = context.settings
        centroids = cluster_centroids(context.features, context.labels).to(context.device)
        return cls(ClusterProxies(centroids, update=s.cc_update, momentum=s.momentum, temperature=s.temperature),
                   CameraTerms.build(context), camera_local_mask(context))

    def loss(self, f: torch.Tensor, y: torch.Tensor, cameras: torch.Tensor | None = None):
        allowed = None if self.camera_local is None else self.camera_local.allowed(y, cameras)
        loss, terms = self.memory.loss(f, y, allowed), {}
        if self.camera is not None:
            terms["loss_cc"] = loss
            loss = self.camera.add_to(loss, terms, f, y, cameras)
        return loss, terms

    @torch.no_grad()
    def update(self, f, f_momentum, y, cameras: torch.Tensor | None = None) -> None:
        self.memory.update(f, y)
        if self.camera is not None:
            self.camera.update(f, y, cameras)


register_objective("cc", ClusterContrast)
