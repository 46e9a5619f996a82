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
import torch

from ..memory.camera import CameraProxies
from .base import ObjectiveContext


@dataclass(frozen=True)
class CameraSettings:
    """The camera-aware terms' settings (fields named like the ``memory`` keys; mixed into the
    settings of ``cc`` and ``dmi``)."""

    camera_proxies: bool = False  # add the terms
    camera_intra_weight: float = 1.0  # weight of the intra-camera loss (CAP: 1)
    camera_inter_weight: float = 0.5  # weight of the inter-camera loss (CAP: 0.5, O2CAP: 1)
    camera_hard_negatives: int = 50  # hard negative proxies of the inter-camera loss
    camera_temperature: float = 0.07
    camera_momentum: float = 0.2  # weight of the old value in camera proxy updates
    single_camera_clusters: str = "global"  # own_camera: a one-camera cluster trains within its camera (camera_local.py)


@dataclass
class CameraTerms:
    """The camera memory of one epoch and the weights of its two losses."""

    memory: CameraProxies
    intra_weight: float
    inter_weight: float

    @classmethod
    def build(cls, context: ObjectiveContext, s: CameraSettings) -> "CameraTerms | None":
        """The terms with settings ``s``, or None when they are off."""
        if not s.camera_proxies:
            return None
        if context.cameras is None:
            raise RuntimeError("memory.camera_proxies needs the training cameras in the ObjectiveContext")
        memory = CameraProxies.from_features(context.features, context.labels, context.cameras,
                                             momentum=s.camera_momentum, temperature=s.camera_temperature,
                                             hard_negatives=s.camera_hard_negatives)
        return cls(memory.to(context.device), float(s.camera_intra_weight), float(s.camera_inter_weight))

    @staticmethod
    def describe(s: CameraSettings) -> str:
        if not s.camera_proxies:
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
