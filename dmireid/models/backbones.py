"""The backbone registry (``model.arch``): one table for the built-in and plug-in backbones.

    from dmireid.models import register_backbone

    def my_backbone(name, pretrained, last_stride, width=64):   # keyword options from model.options
        net = MyNet(width)                                       # B×3×H×W -> B×C×h×w (or B×C)
        net.out_channels = 4 * width                             # the channels it gives
        if pretrained is not None:                               # None | "imagenet" | a Path
            net.load_state_dict(torch.load(pretrained))
        return net

    register_backbone("my_net", my_backbone)      # then model.arch=my_net, or build_model("my_net")
    register_backbone("mine:", factory)            # a prefix entry: serves every "mine:<anything>"

A factory is called as ``factory(name=arch, pretrained=…, last_stride=…, **options)`` and returns an
``nn.Module`` with an int attribute ``out_channels``. Its output is a B×C×h×w map (pooled by the
model's GeM/avg pooling) or, when the module sets ``output_kind = "vector"``, B×C vectors that go
straight into the BN neck (a ViT's CLS token). ``pretrained`` is already normalised: ``None``,
``"imagenet"`` or a ``pathlib.Path``; the factory loads it (or raises a one-line
:class:`~dmireid.errors.DmireidError`). A module with a ``load_file(path)`` method also serves
:func:`dmireid.models.load_pretrained`.
"""

from __future__ import annotations

import inspect
from typing import Callable

from torch import nn

from ..errors import DmireidError
from ..registry import Registry, check_options

BackboneFactory = Callable[..., nn.Module]

BACKBONES: Registry[BackboneFactory] = Registry("backbone", "model.arch")

OUTPUT_KINDS = ("map", "vector")


def register_backbone(name: str, factory: BackboneFactory | None = None, *, overwrite: bool = False):
    """Register ``factory`` as ``model.arch=name`` (a name ending in ``:`` is a prefix entry).

    Usable as ``register_backbone(name, factory)`` or as a decorator ``@register_backbone(name)``.
    """
    return BACKBONES.register(name, factory, overwrite=overwrite)


# what build_model passes to every backbone factory, and the config key each comes from
FACTORY_ARGUMENTS = {"name": "model.arch", "pretrained": "model.pretrained", "last_stride": "model.last_stride"}


def check_backbone_options(arch: str, options: dict) -> None:
    """``model.options`` against the factory of ``arch`` (unknown, ill-typed, missing: one line)."""
    registered, factory = BACKBONES.lookup(arch)
    check_options(factory, options, kind="backbone", name=arch, key="model.options", given=FACTORY_ARGUMENTS)


def takes_option(arch: str, option: str) -> bool:
    """Whether the factory of ``arch`` names ``option`` as a parameter (e.g. a ViT's ``img_size``)."""
    try:
        return option in inspect.signature(BACKBONES.get(arch)).parameters
    except (TypeError, ValueError):
        return False


def check_backbone(backbone, arch: str) -> nn.Module:
    """``backbone`` as a factory must return it: an ``nn.Module`` with ``out_channels`` (one-line errors)."""
    if not isinstance(backbone, nn.Module):
        raise DmireidError(f"model.arch {arch!r}: the backbone factory returned {type(backbone).__name__}, not an nn.Module")
    channels = getattr(backbone, "out_channels", None)
    if not isinstance(channels, int) or isinstance(channels, bool) or channels <= 0:
        raise DmireidError(f"model.arch {arch!r}: the backbone has no positive int attribute out_channels "
                           f"(got {channels!r}); its factory must set it")
    kind = getattr(backbone, "output_kind", "map")
    if kind not in OUTPUT_KINDS:
        raise DmireidError(f"model.arch {arch!r}: backbone output_kind {kind!r} is not one of {', '.join(OUTPUT_KINDS)}")
    return backbone
