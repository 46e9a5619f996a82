"""Models (spec §2): a registered backbone (last stride 1), GeM pooling, BN neck, ghost BatchNorm.

    build_model(arch="resnet50", pretrained=None, pooling="gem", gem_p=3.0, last_stride=1,
                bn_group_size=64, **backbone_options) -> ReIDModel  # B×3×H×W -> B×d unit rows
    (from a config: dmireid.build.model(cfg), the one builder of training, evaluation and inference)
    register_backbone(name, factory)                # model.arch=name; "prefix:" entries too
    BACKBONES.names()                               # resnet18, resnet34, resnet50, resnet50_ibn_a, timm:
    load_pretrained(model_or_backbone, path)        # a weight file into the backbone, strictly
    set_bn_group_size(model, G)                     # ghost BatchNorm in place (0 = plain)
"""

# importing resnet, ibn and timm_backbone registers resnet18/34/50, resnet50_ibn_a and timm:
# (timm itself is imported only when a timm: backbone is built)
from .backbones import BACKBONES, check_backbone_options, register_backbone, takes_option
from .ghost_bn import GhostBatchNorm1d, GhostBatchNorm2d, GhostBatchNormMixin, register_ghost_class, set_bn_group_size
from .ibn import IBN
from .pooling import GeM
from .reid import ReIDModel, build_model, load_pretrained
from .resnet import ResNetBackbone
from .timm_backbone import TimmBackbone
from .weights import normalise_pretrained

__all__ = [
    "BACKBONES",
    "GeM",
    "GhostBatchNorm1d",
    "GhostBatchNorm2d",
    "GhostBatchNormMixin",
    "IBN",
    "ReIDModel",
    "ResNetBackbone",
    "TimmBackbone",
    "build_model",
    "check_backbone_options",
    "load_pretrained",
    "normalise_pretrained",
    "register_backbone",
    "register_ghost_class",
    "set_bn_group_size",
    "takes_option",
]
