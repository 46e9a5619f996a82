"""Cluster Contrast (spec §4.1): one proxy per cluster, cross-entropy against the proxies.

With ``memory.camera_proxies`` CAP's camera-aware terms are added (:mod:`.camera`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..memory import ClusterProxies, cluster_centroids
from .base import Objective, ObjectiveContext, register_objective
from .camera import CameraSettings, CameraTerms
from .camera_local import CameraLocalMask, camera_local_mask


@dataclass(frozen=True)
class CCSettings(CameraSettings):
    """``method=cc``'s settings (``memory`` keys): proxy temperature, momentum and update rule."""

    temperature: float = 0.05
    momentum: float = 0.1  # weight of the old value in proxy momentum updates
    cc_update: str = "sequential"  # sequential | mean | hard (spec §4.1)


class ClusterContrast(Objective):
    """``method=cc``: a :class:`~dmireid.memory.ClusterProxies` memory initialised with the centroids."""

    settings_class = CCSettings

    def __init__(self, memory: ClusterProxies, camera: CameraTerms | None = None,
                 camera_local: CameraLocalMask | None = None):
        super().__init__()
        self.memory = memory
        self.camera, self.camera_local = camera, camera_local
        self.camera_memory = camera.memory if camera is not None else None
        self.needs_cameras = camera is not None or camera_local is not None

    @classmethod
    def describe(cls, settings: CCSettings, options, stage) -> str:
        return f"method cc: one proxy per cluster, update={settings.cc_update}{CameraTerms.describe(settings)}"

    @classmethod
    def build(cls, context: ObjectiveContext, s: CCSettings) -> "ClusterContrast":
        centroids = cluster_centroids(context.features, context.labels).to(context.device)
        return cls(ClusterProxies(centroids, update=s.cc_update, momentum=s.momentum, temperature=s.temperature),
                   CameraTerms.build(context, s), camera_local_mask(context, s.single_camera_clusters))

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
