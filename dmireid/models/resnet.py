"""torchvision ResNet-18/34/50 backbones (last stride 1), registered as ``model.arch=resnet18|34|50``.

    backbone = resnet_backbone("resnet50", pretrained="imagenet", last_stride=1)  # B×3×H×W -> B×2048×H/16×W/16
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torchvision
from torch import nn

from ..errors import DmireidError
from .backbones import register_backbone
from .weights import Pretrained, hub_weight_file, load_file_strict

STEM_AND_STAGES = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


class ResNetBackbone(nn.Sequential):
    """A ResNet without avgpool/fc: B×3×H×W -> B×C×H/s×W/s (s = 16 with last stride 1).

    Child names are torchvision's (``conv1``, ``bn1``, ``layer1`` … ``layer4``), so its
    state_dict keys are those of a torchvision ResNet state_dict minus ``fc.*``.
    """

    def __init__(self, resnet: nn.Module, arch: str = "resnet"):
        super().__init__(OrderedDict((name, getattr(resnet, name)) for name in STEM_AND_STAGES))
        block = self.layer4[-1]
        last_bn = block.bn3 if hasattr(block, "bn3") else block.bn2
        self.out_channels: int = last_bn.num_features
        self.arch = arch

    def load_file(self, path: str | Path) -> None:
        """Load a ResNet state_dict file strictly (``fc.*`` ignored; see :func:`load_file_strict`)."""
        load_file_strict(self, path, self.arch)


def set_last_stride(resnet: nn.Module, stride: int) -> None:
    """Set the stride of layer4's first block (torchvision: on conv2 in a Bottleneck, conv1 in a BasicBlock)."""
    block = resnet.layer4[0]
    conv = block.conv2 if hasattr(block, "conv3") else block.conv1
    conv.stride = (stride, stride)
    if block.downsample is not None:
        block.downsample[0].stride = (stride, stride)


def load_imagenet_torchvision(backbone: ResNetBackbone, arch: str) -> None:
    """torchvision's IMAGENET1K_V1 file for ``arch``: from the torch hub cache, else downloaded."""
    weights = torchvision.models.get_model_weights(arch).IMAGENET1K_V1
    size_mb = float(weights.meta.get("_file_size", 0.0))
    path = hub_weight_file(weights.url, size_mb, f"model.pretrained=imagenet ({arch}, torchvision IMAGENET1K_V1)")
    backbone.load_file(path)


def resnet_backbone(name: str, pretrained: Pretrained = None, last_stride: int = 1) -> ResNetBackbone:
    """torchvision ``name`` (resnet18 | resnet34 | resnet50), random init, then ``pretrained`` loaded."""
    if name not in TORCHVISION_RESNETS:
        raise DmireidError(f"model.arch {name!r} is not a torchvision ResNet this factory builds")
    resnet = getattr(torchvision.models, name)(weights=None)
    set_last_stride(resnet, last_stride)
    backbone = ResNetBackbone(resnet, name)
    if pretrained == "imagenet":
        load_imagenet_torchvision(backbone, name)
    elif pretrained is not None:
        backbone.load_file(pretrained)
    return backbone


TORCHVISION_RESNETS = ("resnet18", "resnet34", "resnet50")
for _arch in TORCHVISION_RESNETS:
    register_backbone(_arch, resnet_backbone)
