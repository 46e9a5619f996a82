"""IBN-ResNet-50-a (Pan et al., ECCV 2018, "Two at Once …"), registered as ``model.arch=resnet50_ibn_a``.

The architecture of the official IBN-Net code (GitHub XingangPan/IBN-Net, ``resnet50_ibn_a``): a
ResNet-50 whose Bottleneck blocks in layer1–layer3 replace ``bn1`` with an IBN layer — the first
``planes // 2`` channels go through ``InstanceNorm2d(affine=True)`` (``bn1.IN``), the rest through
``BatchNorm2d`` (``bn1.BN``); layer4 and the stem are plain. Strides sit on ``conv2`` (as in
torchvision), so last stride 1 is set on ``layer4.0.conv2`` and ``layer4.0.downsample.0``.
State_dict keys and shapes are the official model's minus ``fc.*`` (tests/data/resnet50_ibn_a_keys.txt).

Weight files, both loaded strictly from a local path:
- ``resnet50_ibn_a-d9d0bb7b.pth``: the official ImageNet release (a plain state_dict with ``fc.*``);
- ``resnet50_ibn_a.pth.tar``: the older file the Cluster Contrast line loads
  (``{"state_dict": {"module.conv1.weight": …}, …}``).
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from .backbones import register_backbone
from .resnet import ResNetBackbone, set_last_stride
from .weights import Pretrained, hub_weight_file

IBN_A_URL = "https://github.com/XingangPan/IBN-Net/releases/download/v1.0/resnet50_ibn_a-d9d0bb7b.pth"
IBN_A_FILE_MB = 97.7  # its 25.6 M fp32 values (incl. fc) in MiB, the unit of torchvision's "_file_size"


class IBN(nn.Module):
    """Instance-Batch Normalization: IN on the first ``int(planes * ratio)`` channels, BN on the rest.

    B×planes×H×W -> B×planes×H×W. ``IN`` keeps no running statistics (the official default), so in
    eval mode it still normalises each image by its own statistics; ``BN`` is an ordinary
    ``nn.BatchNorm2d`` (ghost BatchNorm converts it like any other).
    """

    def __init__(self, planes: int, ratio: float = 0.5):
        super().__init__()
        self.half = int(planes * ratio)
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = nn.BatchNorm2d(planes - self.half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        instance = self.IN(x[:, : self.half].contiguous())
        batch = self.BN(x[:, self.half:].contiguous())
        return torch.cat((instance, batch), dim=1)


def _ibn_resnet50_a() -> nn.Module:
    """torchvision's ResNet-50 (random init) with ``bn1`` of every layer1–3 block replaced by IBN.

    torchvision's init (conv: normal with std sqrt(2 / (k·k·out)), BN: weight 1, bias 0) is the
    official one; the IBN layers start at weight 1, bias 0 as there.
    """
    resnet = torchvision.models.resnet50(weights=None)
    for stage in (resnet.layer1, resnet.layer2, resnet.layer3):
        for block in stage:
            block.bn1 = IBN(block.bn1.num_features)
    return resnet


def resnet50_ibn_a_backbone(name: str = "resnet50_ibn_a", pretrained: Pretrained = None,
                            last_stride: int = 1) -> ResNetBackbone:
    """IBN-ResNet-50-a without avgpool/fc: B×3×H×W -> B×2048×H/16×W/16 (last stride 1).

    pretrained: None (random init), a weight file (either format above), or ``"imagenet"``: the
    official file ``resnet50_ibn_a-d9d0bb7b.pth`` from torch.hub's checkpoints folder (where
    ``torch.hub.load_state_dict_from_url`` keeps it), downloaded from the IBN-Net release when absent.
    """
    resnet = _ibn_resnet50_a()
    set_last_stride(resnet, last_stride)
    backbone = ResNetBackbone(resnet, name)
    if pretrained == "imagenet":
        pretrained = hub_weight_file(IBN_A_URL, IBN_A_FILE_MB, "model.pretrained=imagenet (resnet50_ibn_a, official IBN-Net file)")
    if pretrained is not None:
        backbone.load_file(pretrained)
    return backbone


register_backbone("resnet50_ibn_a", resnet50_ibn_a_backbone)
