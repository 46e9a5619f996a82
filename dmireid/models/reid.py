"""ReID model: a registered backbone -> GeM/avg pooling (maps only) -> BN neck -> L2 norm.

    model = build_model("resnet50", pretrained="imagenet", bn_group_size=64)
    feats = model(images)            # B×3×256×128 -> B×2048, unit rows (train and eval)
    model = build_model("timm:vit_small_patch16_224", pretrained="vit_s.pth", img_size=[256, 128])
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DmireidError
from .backbones import BACKBONES, check_backbone, check_backbone_options
from .ghost_bn import set_bn_group_size
from .pooling import GeM
from .weights import load_file_strict, normalise_pretrained

log = logging.getLogger(__name__)

POOLINGS = ("gem", "avg")


class ReIDModel(nn.Module):
    """Backbone -> pooling -> BatchNorm1d neck (bias frozen) -> L2 normalisation.

    ``forward(x)``: B×3×H×W -> B×``feature_dim`` float32, unit rows, in train and eval mode. A
    backbone giving B×C×h×w maps is pooled by ``pool``; one giving B×C vectors (a ViT's token)
    goes straight to the neck (``pool`` is then ``nn.Identity``).
    """

    def __init__(self, backbone: nn.Module, pooling: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.pool = pooling
        self.feature_dim: int = int(backbone.out_channels)
        self.neck = nn.BatchNorm1d(self.feature_dim)
        nn.init.ones_(self.neck.weight)
        nn.init.zeros_(self.neck.bias)
        self.neck.bias.requires_grad_(False)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """B×3×H×W -> the backbone's output: B×C×h×w (16×8 at 256×128 with last stride 1), or B×C."""
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)
        if features.dim() == 4:
            features = self.pool(features).flatten(1)
        elif features.dim() != 2:
            raise DmireidError(f"the backbone gave a {features.dim()}-D output {tuple(features.shape)}; "
                               f"expected B×C×H×W maps or B×C vectors")
        return F.normalize(self.neck(features), dim=1)


def _check_settings(pooling: str, last_stride: int) -> None:
    if last_stride not in (1, 2):
        raise DmireidError(f"model.last_stride must be 1 or 2, got {last_stride!r}")
    if pooling not in POOLINGS:
        raise DmireidError(f"model.pooling {pooling!r} is not one of {', '.join(POOLINGS)}")


def build_model(
    arch: str = "resnet50",
    pretrained: str | Path | None = None,
    pooling: str = "gem",
    gem_p: float = 3.0,
    last_stride: int = 1,
    bn_group_size: int = 64,
    **backbone_options: Any,
) -> ReIDModel:
    """Build the ReID model of spec §2 around the backbone registered as ``arch``.

    arch: a registered backbone (``dmireid.models.BACKBONES.names()``): resnet18 | resnet34 |
        resnet50 (feature_dim 512 | 512 | 2048), resnet50_ibn_a (2048), ``timm:NAME`` (timm's
        ``num_features``), or a plug-in's.
    pretrained: None / ``"none"`` (random init), a weight file path, or ``"imagenet"``
        (torchvision's IMAGENET1K_V1 file; the official IBN-Net file for resnet50_ibn_a): from the
        torch hub cache, downloaded when absent, else a one-line error naming file, size, folder.
    pooling: ``gem`` (trainable p, initial ``gem_p``) or ``avg``; unused for vector backbones.
    last_stride: 1 (16×8 map at 256×128) or 2 (the ImageNet 8×4).
    bn_group_size: ghost BatchNorm group (0 = whole batch), see :mod:`dmireid.models.ghost_bn`;
        a batch of at most this many images is plain BatchNorm (eval mode: always).
    backbone_options: keyword options of the backbone's factory (``model.options``), e.g.
        ``img_size=[256, 128], token_pool="cls"`` for a timm ViT; unknown ones: one-line error.
    """
    registered, factory = BACKBONES.lookup(arch)
    _check_settings(pooling, last_stride)
    check_backbone_options(arch, backbone_options)
    weights = normalise_pretrained(pretrained)
    backbone = factory(name=arch, pretrained=weights, last_stride=last_stride, **backbone_options)
    check_backbone(backbone, arch)
    if getattr(backbone, "output_kind", "map") == "vector":
        pool: nn.Module = nn.Identity()
        log.info("%s gives vectors: model.pooling=%s not used", arch, pooling)
    else:
        pool = GeM(p=gem_p) if pooling == "gem" else nn.AdaptiveAvgPool2d(1)
    model = ReIDModel(backbone, pool)
    if bn_group_size:
        set_bn_group_size(model, bn_group_size)
    return model


def load_pretrained(model_or_backbone: nn.Module, path: str | Path) -> None:
    """Load a weight file into the backbone, in place (strict; ``fc.*`` ignored for ResNets).

    ``path``: a ``torch.save``d state_dict (keys ``conv1.weight``, ``layer1.0.conv1.weight``, …),
    possibly wrapped as ``{"state_dict": …}`` or ``{"model": …}`` and/or with a ``module.`` prefix;
    a dmireid model state_dict (``backbone.*`` keys) also works. A backbone with a
    ``load_file(path)`` method (every built-in one) loads its own formats.
    Missing or mismatched keys, an unreadable or absent file: :class:`DmireidError`.
    """
    backbone = model_or_backbone.backbone if isinstance(model_or_backbone, ReIDModel) else model_or_backbone
    if callable(getattr(backbone, "load_file", None)):
        backbone.load_file(path)
    else:
        load_file_strict(backbone, path, getattr(backbone, "arch", type(backbone).__name__))
