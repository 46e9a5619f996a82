"""Any ``timm`` model as a backbone: ``model.arch=timm:NAME`` (the optional extra ``dmireid[timm]``).

    build_model("timm:resnet10t", last_stride=1)                          # CNN: forward_features map
    build_model("timm:vit_small_patch16_224", pretrained="vit_s_lup.pth",  # ViT: CLS token (B×384)
                img_size=[256, 128], drop_path_rate=0.1)

CNNs give ``forward_features`` maps (B×C×h×w; NHWC models such as Swin are permuted) pooled by
the model's GeM/avg pooling; token models (ViT, DeiT, EVA …: anything with ``num_prefix_tokens``)
give B×C vectors from timm's own head pooling (``token_pool``: ``cls`` token or ``avg`` of the
patch tokens, both after the model's final norm; default the model's own) straight into the BN neck.

Never downloads: ``timm.create_model(NAME, pretrained=False, num_classes=0, …)``; weights come from
``pretrained=PATH`` only (timm's formats: ``.pth``/``.bin``/``.safetensors``, plain or wrapped in
``state_dict``/``model``/``state_dict_ema``; DINO checkpoints with a ``teacher`` entry; dmireid
checkpoints of the same backbone), passed through the model's own ``checkpoint_filter_fn``
(which resizes a ViT's position embeddings for a square source grid; give ``pos_embed_grid``
for a non-square one), classifier keys dropped, then loaded strictly.

``last_stride=1`` is timm's ``output_stride=16`` (CNNs that take it; token models ignore it, with a
log line). Options a model does not take among ``img_size`` and ``output_stride`` are dropped;
any other option goes to ``timm.create_model`` as is.
"""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path

import torch
from torch import nn

from ..errors import DmireidError
from .backbones import register_backbone
from .ghost_bn import GhostBatchNormMixin, register_ghost_class
from .weights import Pretrained, load_state_strict, unwrap_state

log = logging.getLogger(__name__)

TOKEN_POOLS = {"cls": "token", "avg": "avg"}  # token_pool -> timm's global_pool
OPTIONAL_KWARGS = ("img_size", "output_stride")  # dropped (silently) when a model does not take them


def _timm():
    try:
        import timm
    except ImportError as exc:
        raise DmireidError(f"model.arch=timm:…: the timm package is not installed ({exc}); "
                           f"pip install 'dmireid[timm]'") from None
    return timm


@functools.cache
def register_timm_norms() -> None:
    """Give timm's ``BatchNormAct2d`` a ghost variant that keeps its drop + activation after normalising."""
    from timm.layers import BatchNormAct2d

    class GhostBatchNormAct2d(GhostBatchNormMixin, BatchNormAct2d):
        """timm ``BatchNormAct2d`` with per-group train statistics, then its ``drop`` and ``act``."""

        def after_norm(self, y: torch.Tensor) -> torch.Tensor:
            return self.act(self.drop(y))

    register_ghost_class(BatchNormAct2d, GhostBatchNormAct2d)


def _rejected_kwarg(exc: TypeError, kwargs: dict) -> str | None:
    text = str(exc)
    if "unexpected keyword argument" not in text:
        return None
    return next((key for key in OPTIONAL_KWARGS if key in kwargs and f"'{key}'" in text), None)


def create_timm_model(model_name: str, kwargs: dict) -> tuple[nn.Module, set[str]]:
    """``timm.create_model(model_name, pretrained=False, num_classes=0, **kwargs)`` and the optional
    kwargs the model rejected (dropped and retried: the rejection happens before any init, so the
    random-number stream is not consumed twice)."""
    timm = _timm()
    if not timm.is_model(model_name):
        raise DmireidError(f"model.arch 'timm:{model_name}': timm {timm.__version__} has no model {model_name!r} "
                           f"(see timm.list_models())")
    kwargs, dropped = dict(kwargs), set()
    while True:
        try:
            return timm.create_model(model_name, pretrained=False, num_classes=0, **kwargs), dropped
        except TypeError as exc:
            key = _rejected_kwarg(exc, kwargs)
            if key is None:
                raise DmireidError(f"model.options for timm:{model_name}: {exc}") from None
            dropped.add(key)
            kwargs.pop(key)


class TimmBackbone(nn.Module):
    """A timm model (``body``) as a backbone: B×3×H×W -> B×C×h×w (CNN) or B×C (token model).

    State_dict keys are ``body.<timm's keys>``. ``out_channels`` is timm's ``num_features``.
    """

    def __init__(self, body: nn.Module, arch: str):
        super().__init__()
        self.body = body
        self.arch = arch
        self.out_channels: int = int(body.num_features)
        self.output_kind = "vector" if is_token_model(body) else "map"
        self.channels_last_output = getattr(body, "output_fmt", "NCHW") == "NHWC"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.output_kind == "vector":
            self._check_input_size(x)
            return self.body.forward_head(self.body.forward_features(x), pre_logits=True)
        features = self.body.forward_features(x)
        return features.permute(0, 3, 1, 2) if self.channels_last_output else features

    def _check_input_size(self, x: torch.Tensor) -> None:
        patch = getattr(self.body, "patch_embed", None)
        size = getattr(patch, "img_size", None)
        if size is None or not getattr(patch, "strict_img_size", False) or getattr(self.body, "dynamic_img_size", False):
            return
        if tuple(x.shape[-2:]) != tuple(size):
            raise DmireidError(f"model.arch {self.arch!r} is built for {size[0]}x{size[1]} input, got "
                               f"{x.shape[-2]}x{x.shape[-1]}; set model.options.img_size=[{x.shape[-2]}, {x.shape[-1]}]")

    def load_file(self, path: str | Path, pos_embed_grid=None) -> None:
        """Load a timm-format weight file strictly into ``body`` (see the module docstring)."""
        load_timm_file(self.body, path, self.arch, pos_embed_grid)


def is_token_model(body: nn.Module) -> bool:
    """Whether a timm model pools tokens (ViT family: it has ``num_prefix_tokens``) rather than a map."""
    return getattr(body, "num_prefix_tokens", None) is not None


def set_token_pool(body: nn.Module, arch: str, token_pool: str) -> None:
    """Make a token model pool its (final-normed) tokens by ``cls`` or ``avg``; its layers stay as built,
    so one weight file loads under either choice (timm's ``global_pool`` set after construction)."""
    if not is_token_model(body):
        raise DmireidError(f"model.options.token_pool is for token models (ViTs); {arch} gives feature maps")
    if token_pool == "cls" and getattr(body, "cls_token", None) is None:
        raise DmireidError(f"model.options.token_pool=cls: {arch} has no class token; use token_pool=avg")
    body.reset_classifier(0, global_pool=TOKEN_POOLS[token_pool])


def _read_timm_state(path: Path) -> dict:
    timm = _timm()
    what = f"pretrained weight file {path}"
    if not path.is_file():
        raise DmireidError(f"{what} not found")
    try:
        state = timm.models.load_state_dict(str(path), use_ema=True, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unreadable file, blocked pickle: one line
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise DmireidError(f"{what}: not a readable timm/torch weight file ({text})") from None
    teacher = state.get("teacher") if isinstance(state, dict) else None
    if isinstance(teacher, dict):  # a DINO checkpoint: the teacher's backbone.* entries
        state = teacher
    state = unwrap_state(state, what)
    if any(k.startswith("body.") for k in state):  # a dmireid checkpoint of a timm backbone
        state = {k[len("body."):]: v for k, v in state.items() if k.startswith("body.")}
    return state


def resample_pos_embed(body: nn.Module, state: dict, grid) -> None:
    """Resize ``state["pos_embed"]`` (a ``grid[0]×grid[1]`` patch grid) to the model's grid, in place."""
    from timm.layers import resample_abs_pos_embed

    source = state.get("pos_embed")
    target = getattr(body, "pos_embed", None)
    if source is None or target is None or tuple(source.shape) == tuple(target.shape):
        return
    prefix = 0 if getattr(body, "no_embed_class", False) else int(body.num_prefix_tokens)
    if source.shape[1] - prefix != int(grid[0]) * int(grid[1]):
        raise DmireidError(f"model.options.pos_embed_grid {list(grid)}: the file's pos_embed has "
                           f"{source.shape[1] - prefix} patch positions, not {int(grid[0]) * int(grid[1])}")
    state["pos_embed"] = resample_abs_pos_embed(source, new_size=list(body.patch_embed.grid_size),
                                                old_size=[int(grid[0]), int(grid[1])], num_prefix_tokens=prefix)


def load_timm_file(body: nn.Module, path: str | Path, arch: str, pos_embed_grid=None) -> None:
    """Read ``path``, adapt it with the model's own ``checkpoint_filter_fn``, drop the classifier, load strictly."""
    path = Path(path)
    what = f"pretrained weight file {path}"
    state = _read_timm_state(path)
    if pos_embed_grid is not None:
        resample_pos_embed(body, state, pos_embed_grid)
    filter_fn = getattr(sys.modules.get(type(body).__module__), "checkpoint_filter_fn", None)
    if filter_fn is not None:
        try:
            state = filter_fn(state, body)
        except Exception as exc:  # noqa: BLE001 - timm's own conversion failed on this file
            raise DmireidError(f"{what}: timm's checkpoint conversion for {arch} failed "
                               f"({type(exc).__name__}: {str(exc)[:200]})") from None
    expected = body.state_dict()
    heads = body.pretrained_cfg.get("classifier") or ()
    heads = (heads,) if isinstance(heads, str) else tuple(heads)
    state = {k: v for k, v in state.items() if k in expected or not k.startswith(tuple(h + "." for h in heads))}
    load_state_strict(body, state, what, f"the {arch} backbone")
    log.info("loaded %s backbone weights from %s", arch, path)


def timm_backbone(name: str, pretrained: Pretrained = None, last_stride: int = 1, token_pool: str | None = None,
                  img_size=None, pos_embed_grid=None, **create_kwargs) -> TimmBackbone:
    """The backbone for ``model.arch=timm:NAME``.

    token_pool: ``cls`` | ``avg`` | None (the model's own pooling) for token models.
    img_size: [H, W] the model is built for (token models: position-embedding grid; CNNs ignore it).
    pos_embed_grid: [h, w] patch grid of a ViT file's position embeddings when it is not square
        (e.g. [16, 8] for a ViT-S/16 pretrained at 256×128); resized to the model's grid.
    create_kwargs: passed to ``timm.create_model`` (e.g. ``drop_path_rate``, ``dynamic_img_size``).
    """
    _timm()  # one-line error when the extra is not installed
    model_name = name.split(":", 1)[1] if ":" in name else name
    kwargs = dict(create_kwargs)
    if img_size is not None:
        kwargs["img_size"] = tuple(int(v) for v in img_size)
    if last_stride == 1:
        kwargs["output_stride"] = 16
    if token_pool is not None and token_pool not in TOKEN_POOLS:
        raise DmireidError(f"model.options.token_pool {token_pool!r} is not one of {', '.join(TOKEN_POOLS)}")
    register_timm_norms()
    body, dropped = create_timm_model(model_name, kwargs)
    backbone = TimmBackbone(body, name)
    if "output_stride" in dropped:
        if backbone.output_kind == "map":
            raise DmireidError(f"model.arch {name!r} does not take timm's output_stride (model.last_stride=1); "
                               f"use model.last_stride=2")
        log.info("%s is a token model: model.last_stride=1 ignored", name)
    if token_pool is not None:
        set_token_pool(body, name, token_pool)
    if pretrained == "imagenet":
        raise DmireidError(f"model.pretrained=imagenet: dmireid downloads no timm weights for {name}; "
                           f"download the file and pass model.pretrained=/path/to/file")
    if pretrained is not None:
        backbone.load_file(pretrained, pos_embed_grid)
    return backbone


register_backbone("timm:", timm_backbone)
