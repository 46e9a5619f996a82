"""Models (spec §2): ResNet backbone with last stride 1, GeM pooling, BN neck, ghost BatchNorm.

    build_model(arch="resnet50", pretrained=None, pooling="gem", gem_p=3.0, last_stride=1,
                bn_group_size=0) -> ReIDModel      # forward: B×3×H×W -> B×d unit rows
    load_pretrained(model_or_backbone, path)       # torchvision ResNet state_dict file
    set_bn_group_size(model, G)                    # ghost BatchNorm in place (0 = plain)
"""

from .ghost_bn import GhostBatchNorm1d, GhostBatchNorm2d, set_bn_group_size
from .pooling import GeM
from .resnet import ARCHS, ReIDModel, ResNetBackbone, build_model, load_pretrained

__all__ = [
    "ARCHS",
    "GeM",
    "GhostBatchNorm1d",
    "GhostBatchNorm2d",
    "ReIDModel",
    "ResNetBackbone",
    "build_model",
    "load_pretrained",
    "set_bn_group_size",
]
