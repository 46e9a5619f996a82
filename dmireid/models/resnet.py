"""ReID model: torchvision ResNet backbone (last stride 1) -> GeM/avg pooling -> BN neck -> L2 norm.

    model = build_model("resnet50", pretrained="weights/resnet50.pth", bn_group_size=64)
    feats = model(images)            # B×3×256×128 -> B×2048, unit rows (train and eval)
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from ..errors import DmireidError
from .ghost_bn import set_bn_group_size
from .pooling import GeM

log = logging.getLogger(__name__)

ARCHS = ("resnet18", "resnet34", "resnet50")


class ResNetBackbone(nn.Sequential):
    """A torchvision ResNet without avgpool/fc: B×3×H×W -> B×C×H/s×W/s (s = 16 with last stride 1).

    Child names are torchvision's (``conv1``, ``bn1``, ``layer1`` … ``layer4``), so its
    state_dict keys are those of a torchvision ResNet state_dict minus ``fc.*``.
    """

    def __init__(self, resnet: torchvision.models.ResNet, arch: str = "resnet"):
        names = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
        super().__init__(OrderedDict((name, getattr(resnet, name)) for name in names))
        block = self.layer4[-1]
        last_bn = block.bn3 if hasattr(block, "bn3") else block.bn2
        self.out_channels: int = last_bn.num_features
        self.arch = arch


class ReIDModel(nn.Module):
    """Backbone -> pooling -> BatchNorm1d neck (bias frozen) -> L2 normalisation.

    ``forward(x)``: B×3×H×W -> B×``feature_dim`` float32, unit rows, in train and eval mode.
    """

    def __init__(self, backbone: ResNetBackbone, pooling: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.pool = pooling
        self.feature_dim: int = backbone.out_channels
        self.neck = nn.BatchNorm1d(self.feature_dim)
        nn.init.ones_(self.neck.weight)
        nn.init.zeros_(self.neck.bias)
        self.neck.bias.requires_grad_(False)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """B×3×H×W -> the layer4 map B×C×h×w (h×w = 16×8 at 256×128 with last stride 1)."""
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.pool(self.backbone(x)).flatten(1)
        return F.normalize(self.neck(pooled), dim=1)


def _set_last_stride(resnet: torchvision.models.ResNet, stride: int) -> None:
    block = resnet.layer4[0]
    # torchvision puts the block stride on conv2 for Bottleneck, on conv1 for BasicBlock
    conv = block.conv2 if isinstance(block, torchvision.models.resnet.Bottleneck) else block.conv1
    conv.stride = (stride, stride)
    if block.downsample is not None:
        block.downsample[0].stride = (stride, stride)


def build_model(
    arch: str = "resnet50",
    pretrained: str | Path | None = None,
    pooling: str = "gem",
    gem_p: float = 3.0,
    last_stride: int = 1,
    bn_group_size: int = 0,
) -> ReIDModel:
    """Build the ReID model of spec §2.

    arch: resnet18 | resnet34 | resnet50 (feature_dim 512 | 512 | 2048), random init.
    pretrained: None, a torchvision ResNet state_dict file (see :func:`load_pretrained`), or
        ``"imagenet"`` (torchvision's IMAGENET1K_V1 weights, the ones CC used; needs internet or
        the torch hub cache).
    pooling: ``gem`` (trainable p, initial ``gem_p``) or ``avg``.
    last_stride: stride of layer4 (1: 16×8 map at 256×128; 2: torchvision's 8×4).
    bn_group_size: ghost BatchNorm group (0 = whole batch), see :mod:`dmireid.models.ghost_bn`.
    """
    if arch not in ARCHS:
        raise DmireidError(f"model.arch {arch!r} is not one of {', '.join(ARCHS)}")
    if last_stride not in (1, 2):
        raise DmireidError(f"model.last_stride must be 1 or 2, got {last_stride!r}")
    if pooling not in ("gem", "avg"):
        raise DmireidError(f"model.pooling {pooling!r} is not one of gem, avg")
    resnet = getattr(torchvision.models, arch)(weights=None)
    _set_last_stride(resnet, last_stride)
    backbone = ResNetBackbone(resnet, arch)
    pool = GeM(p=gem_p) if pooling == "gem" else nn.AdaptiveAvgPool2d(1)
    model = ReIDModel(backbone, pool)
    if pretrained:
        if str(pretrained).lower() == "imagenet":
            _load_imagenet(model, arch)
        else:
            load_pretrained(model, pretrained)
    if bn_group_size:
        set_bn_group_size(model, bn_group_size)
    return model


def _load_imagenet(model: ReIDModel, arch: str) -> None:
    enum = torchvision.models.get_model_weights(arch)
    weights = enum.IMAGENET1K_V1
    try:
        state = weights.get_state_dict(progress=False)
    except Exception as exc:  # no internet, proxy, corrupt cache ...
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DmireidError(
            f"model.pretrained=imagenet: could not get torchvision's {arch} ImageNet weights ({reason}); "
            f"download {weights.url} elsewhere and pass model.pretrained=/path/to/that/file"
        ) from None
    _load_state(model.backbone, state, f"torchvision {arch} ImageNet weights")
    log.info("loaded torchvision %s ImageNet weights (%s)", arch, weights.url)


def load_pretrained(model_or_backbone: nn.Module, path: str | Path) -> None:
    """Load a torchvision ResNet state_dict file into the backbone (``fc.*`` ignored), in place.

    ``path``: a ``torch.save``d state_dict (keys ``conv1.weight``, ``layer1.0.conv1.weight``, …),
    possibly wrapped as ``{"state_dict": …}`` or ``{"model": …}`` and/or with a ``module.`` prefix;
    a dmireid model state_dict (``backbone.*`` keys) also works.
    Missing or mismatched keys, an unreadable or absent file: :class:`DmireidError`.
    """
    backbone = model_or_backbone.backbone if isinstance(model_or_backbone, ReIDModel) else model_or_backbone
    path = Path(path)
    if not path.is_file():
        raise DmireidError(f"pretrained weight file {path} not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DmireidError(f"pretrained weight file {path}: not a readable torch state_dict ({reason[:200]})") from None
    _load_state(backbone, state, f"pretrained weight file {path}")
    log.info("loaded backbone weights from %s", path)


def _load_state(backbone: nn.Module, state, what: str) -> None:
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DmireidError(f"{what}: expected a state_dict of tensors")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    if any(k.startswith("backbone.") for k in state):  # a dmireid ReIDModel state_dict
        state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    expected = backbone.state_dict()
    # checkpoints older than torch 0.4.1 have no num_batches_tracked; BatchNorm fills it in
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    shape = [k for k in state if k in expected and state[k].shape != expected[k].shape]
    problems = []
    if missing:
        problems.append(f"missing keys {', '.join(missing[:3])}" + (f" (+{len(missing) - 3} more)" if len(missing) > 3 else ""))
    if unexpected:
        problems.append(f"unexpected keys {', '.join(unexpected[:3])}" + (f" (+{len(unexpected) - 3} more)" if len(unexpected) > 3 else ""))
    if shape:
        k = shape[0]
        problems.append(f"shape mismatch at {k} ({tuple(state[k].shape)} vs {tuple(expected[k].shape)})"
                        + (f" (+{len(shape) - 1} more)" if len(shape) > 1 else ""))
    if problems:
        name = getattr(backbone, "arch", type(backbone).__name__)
        raise DmireidError(f"{what} does not match the {name} backbone: {'; '.join(problems)}")
    backbone.load_state_dict(state, strict=False)
