"""DMI (spec §4.2-4.3): where the method differs from Cluster Contrast, all in one place.

1. **Discrepant cluster proxies** (DCP): M proxy sets per cluster instead of one, each with its own
   update rule (``memory.dcp_updates``) and loss margin (``memory.dcp_margins``).
2. **Multi-instance proxies** (MIP): K_mip instance features per cluster, initialised from the
   momentum encoder θ' and replaced by each batch's features (``memory.mip_source``), with a loss
   that takes each cluster's hardest own instance and every other cluster's closest one.
3. A **momentum encoder** θ' (the engine keeps it when :meth:`DMI.uses_momentum_encoder` says so).

With ``train.schedule=two_stage`` the first stage trains DCP alone (no MIP, no θ').
With ``memory.camera_proxies`` CAP's camera-aware terms are ADDED to L_DCP + λ·L_MIP, in both
stages, over their own (cluster, camera) memory (:mod:`.camera`); DCP and MIP are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..memory import DiscrepantProxies, MultiInstanceProxies, cluster_centroids
from .base import Objective, ObjectiveContext, register_objective
from .camera import CameraSettings, CameraTerms
from .camera_local import CameraLocalMask, camera_local_mask


@dataclass(frozen=True)
class DMISettings(CameraSettings):
    """``method=dmi``'s settings (``memory`` keys): the DCP sets and the MIP memory."""

    temperature: float = 0.05
    momentum: float = 0.1  # weight of the old value in proxy momentum updates
    dcp_updates: tuple[str, ...] = ("hard", "mean")  # one update rule per discrepant proxy set
    dcp_margins: tuple[float, ...] = (0.2, 0.0)  # one loss margin per set: max(0, CE - margin)
    mip_instances: int = 16  # K_mip slots per cluster
    mip_weight: float = 1.0  # lambda
    mip_negatives_topk: int = 0  # 0 = every other cluster
    mip_source: str = "online"  # momentum | online: which batch features replace the MIP slots


class DMI(Objective):
    """``method=dmi``: DCP always; MIP in stage 2 (every epoch with ``train.schedule=single``)."""

    settings_class = DMISettings

    def __init__(self, dcp: DiscrepantProxies, mip: MultiInstanceProxies | None = None, mip_weight: float = 1.0,
                 mip_source: str = "online", generator: torch.Generator | None = None,
                 camera: CameraTerms | None = None, camera_local: CameraLocalMask | None = None):
        super().__init__()
        self.dcp, self.mip = dcp, mip
        self.camera, self.camera_local = camera, camera_local
        self.camera_memory = camera.memory if camera is not None else None
        self.needs_cameras = camera is not None or camera_local is not None
        self.mip_weight, self.mip_source, self.generator = float(mip_weight), mip_source, generator
        self.needs_momentum_features = mip is not None and mip_source == "momentum"

    @classmethod
    def uses_momentum_encoder(cls, settings, options, stage) -> bool:
        return stage == 2

    @classmethod
    def describe(cls, settings: DMISettings, options, stage) -> str:
        s = settings
        mip = (f"mip_instances={s.mip_instances}, mip_source={s.mip_source}, "
               f"mip_negatives_topk={s.mip_negatives_topk or 'all'}, mip_weight={s.mip_weight}"
               if stage == 2 else "no MIP and no momentum encoder in stage 1")
        return (f"method dmi: dcp_updates={list(s.dcp_updates)}, dcp_margins={list(s.dcp_margins)}, {mip}"
                f"{CameraTerms.describe(s)}")

    @classmethod
    def build(cls, context: ObjectiveContext, s: DMISettings) -> "DMI":
        centroids = cluster_centroids(context.features, context.labels).to(context.device)
        dcp = DiscrepantProxies(centroids, updates=tuple(s.dcp_updates), momentum=s.momentum,
                                temperature=s.temperature, margins=tuple(s.dcp_margins))
        camera, local = CameraTerms.build(context, s), camera_local_mask(context, s.single_camera_clusters)
        if context.stage != 2:
            return cls(dcp, camera=camera, camera_local=local)
        generator = torch.Generator(device=context.device).manual_seed(context.seed)
        return cls(dcp, initial_instances(context, s), mip_weight=s.mip_weight, mip_source=s.mip_source,
                   generator=generator, camera=camera, camera_local=local)

    def loss(self, f: torch.Tensor, y: torch.Tensor, cameras: torch.Tensor | None = None):
        allowed = None if self.camera_local is None else self.camera_local.allowed(y, cameras)
        terms = {"loss_dcp": self.dcp.loss(f, y, allowed)}
        loss = terms["loss_dcp"]
        if self.mip is not None:
            terms["loss_mip"] = self.mip.loss(f, y, allowed)
            loss = loss + self.mip_weight * terms["loss_mip"]
        if self.camera is not None:
            loss = self.camera.add_to(loss, terms, f, y, cameras)
        return loss, terms

    @torch.no_grad()
    def update(self, f, f_momentum, y, cameras: torch.Tensor | None = None) -> None:
        self.dcp.update(f, y)
        if self.mip is not None:
            source = f_momentum if self.mip_source == "momentum" and f_momentum is not None else f
            self.mip.replace(source, y, self.generator)
        if self.camera is not None:
            self.camera.update(f, y, cameras)


def initial_instances(context: ObjectiveContext, s: DMISettings) -> MultiInstanceProxies:
    """K_mip θ' features (eval mode) per cluster, members drawn uniformly with replacement."""
    if context.embed_momentum is None:
        raise RuntimeError("DMI's multi-instance proxies need the momentum encoder's features")
    generator = torch.Generator().manual_seed(context.seed)
    members = MultiInstanceProxies.sample_members(context.labels, s.mip_instances, generator).numpy()  # C×K
    unique, inverse = np.unique(members, return_inverse=True)
    features = context.embed_momentum(unique)
    instances = features[torch.from_numpy(inverse.reshape(members.shape))].to(context.device)
    return MultiInstanceProxies(instances, temperature=s.temperature, negatives_topk=s.mip_negatives_topk)


register_objective("dmi", DMI)
