"""Single-camera clusters train within their camera (``memory.single_camera_clusters=own_camera``).

A cluster whose images all lie in one camera — a tracklet not yet associated across cameras
(issue 23), or a one-camera DBSCAN cluster — says nothing about the other cameras: its true
matches there are unknown, so it must not be their negative. With the option on, the proxy
losses of ``cc`` and ``dmi`` (cluster / DCP proxies and DMI's multi-instance proxies) see, for an
image of camera c with label y, only the proxies of

- its own cluster y;
- clusters with an image in camera c;
- when y spans two or more cameras: every other cluster spanning two or more cameras.

So a single-camera cluster is never a negative of an image of another camera, and its own images
are contrasted only with the clusters of their camera. CAP's camera-proxy terms are unchanged.

    mask = CameraLocalMask.from_labels(labels, cameras)   # N labels, N cameras
    allowed = mask.allowed(y, batch_cameras)              # B×C bool
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

SINGLE_CAMERA_RULES = ("global", "own_camera")


@dataclass
class CameraLocalMask:
    """``has_camera`` C×K bool (cluster c has an image in camera k) and ``multi`` C bool (spans >= 2)."""

    has_camera: torch.Tensor
    multi: torch.Tensor

    @classmethod
    def from_labels(cls, labels: torch.Tensor, cameras: torch.Tensor) -> "CameraLocalMask":
        labels, cameras = torch.as_tensor(labels), torch.as_tensor(cameras)
        num_clusters = int(labels.max()) + 1 if labels.numel() else 0
        num_cameras = int(cameras.max()) + 1 if cameras.numel() else 1
        has_camera = torch.zeros(num_clusters, num_cameras, dtype=torch.bool)
        keep = labels >= 0
        has_camera[labels[keep], cameras[keep]] = True
        return cls(has_camera, has_camera.sum(1) > 1)

    def to(self, device) -> "CameraLocalMask":
        return CameraLocalMask(self.has_camera.to(device), self.multi.to(device))

    def allowed(self, y: torch.Tensor, cameras: torch.Tensor) -> torch.Tensor:
        """B labels (-1 outlier), B cameras -> B×C bool: the proxies each image's loss may see."""
        own_label = y.clamp(min=0)
        allowed = self.has_camera[:, cameras].t() | (self.multi[None, :] & self.multi[own_label][:, None])
        allowed[torch.arange(len(y), device=y.device), own_label] = True
        return allowed


def camera_local_mask(context, single_camera_clusters: str = "global") -> CameraLocalMask | None:
    """The mask of an ObjectiveContext when ``single_camera_clusters`` (the setting
    ``memory.single_camera_clusters``) is ``own_camera``, else None."""
    if single_camera_clusters != "own_camera":
        return None
    if context.cameras is None:
        raise RuntimeError("memory.single_camera_clusters=own_camera needs the training cameras")
    return CameraLocalMask.from_labels(context.labels, context.cameras).to(context.device)
