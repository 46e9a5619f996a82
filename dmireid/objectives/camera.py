"""Camera-aware proxy terms (``memory.camera_proxies``), shared by ``cc`` and ``dmi``.

When on, the objective's loss becomes

    loss = (the method's own loss: CC's CE, or DMI's L_DCP + λ·L_MIP, unchanged)
           + memory.camera_intra_weight · L_intra + memory.camera_inter_weight · L_inter

with L_intra / L_inter CAP's intra-camera and inter-camera (association) losses over a separate
memory of (cluster, camera) proxies (:class:`~dmireid.memory.camera.CameraProxies`), updated after
each step with the online features. The camera memory never touches the cluster proxies, DMI's
discrepant proxy sets or its multi-instance proxies: the terms ADD to the method's own terms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..memory.camera import CameraProxies
from .base import ObjectiveContext


@dataclass
class CameraTerms:
    """The camera memory of one epoch and the weights of its two losses."""

    memory: CameraProxies
    intra_weight: float
    inter_weight: float

    @classmethod
    def build(cls, context: ObjectiveContext) -> "CameraTerms | None":
        """The terms of ``context.settings`` (the ``memory`` section), or None when they are off."""
        s = context.settings
        if not getattr(s, "camera_proxies", False):
            return None
        if context.cameras is None:
            raise RuntimeError("memory.camera_proxies needs the training cameras in the ObjectiveContext")
        memory = CameraProxies.from_features(context.features, context.labels, context.cameras,
                                             momentum=s.camera_momentum, temperature=s.camera_temperature,
                                             hard_negatives=s.camera_hard_negatives)
        return cls(memory.to(context.device), float(s.camera_intra_weight), float(s.camera_inter_weight))

    @staticmethod
    def describe(settings: Any) -> str:
        s = settings
        if not getattr(s, "camera_proxies", False):
            return ""
        return (f", camera proxies (CAP): intra weight {s.camera_intra_weight}, inter weight "
                f"{s.camera_inter_weight}, {s.camera_hard_negatives} hard negatives, "
                f"temperature {s.camera_temperature}, momentum {s.camera_momentum}")

    def add_to(self, loss: torch.Tensor, terms: dict[str, torch.Tensor], f: torch.Tensor, y: torch.Tensor,
               cameras: torch.Tensor | None) -> torch.Tensor:
        """``loss`` plus the weighted camera losses; records ``loss_cam_intra`` / ``loss_cam_inter``."""
        if cameras is None:
            raise RuntimeError("the camera-aware terms need the batch's cameras (loss(f, y, cameras=...))")
        intra, inter = self.memory.losses(f, y, cameras)
        terms["loss_cam_intra"], terms["loss_cam_inter"] = intra, inter
        return loss + self.intra_weight * intra + self.inter_weight * inter

    @torch.no_grad()
    def update(self, f: torch.Tensor, y: torch.Tensor, cameras: torch.Tensor | None) -> None:
        if cameras is None:
            raise RuntimeError("the camera-aware terms need the batch's cameras (update(..., cameras=...))")
        self.memory.update(f, y, cameras)
