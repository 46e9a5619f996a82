"""Weight files -> an eval-ready ReID model: which encoder, which architecture, strict loading.

    model, encoder, cfg, (h, w) = load_encoder(state, encoder=None, source="last.pt")

Three kinds of files load:

- a dmireid checkpoint (``{"config", "model", "ema_model", ...}``): the model its saved config
  describes (:func:`dmireid.build.model`; old configs are mapped by
  :func:`dmireid.config.config_from_dict`), with the momentum encoder (``ema_model``) by default
  when present, the online one (``model``) otherwise. Reading it is parsing: no plug-in is
  imported; a backbone that a plug-in registered needs that plug-in imported first (one line
  naming it), an objective or labeler of a plug-in is never needed;
- a plain torchvision ResNet state_dict (``conv1.weight``, ``layer1.0...``, ``fc.*``): the ReID model
  of spec §2 (last stride 1, GeM, fresh BN neck) on that backbone at 256×128 — the model training
  starts from. Such a file holds no config, so the architecture is read off its keys
  (:func:`infer_resnet_arch`: resnet18 / resnet34 / resnet50);
- a bare ReIDModel state_dict (``backbone.layer1...``): likewise, keys only.
"""

from __future__ import annotations

import logging
import re

import torch

from ..config import config_from_dict
from ..errors import DmireidError
from .checkpoint import CONFIG_KEY, EMA_MODEL_KEY, MODEL_KEY, weights_fingerprint  # noqa: F401 (fingerprint re-exported)
from ..models import build_model
from ..models.weights import load_state_strict, unwrap_state

log = logging.getLogger(__name__)

ENCODERS = ("online", "momentum")
DEFAULT_SIZE = (256, 128)


def pick_encoder(state: dict, encoder: str | None, source: str) -> tuple[str, dict]:
    """``(encoder name, its state_dict)`` of a dmireid checkpoint: ``encoder`` when given, else
    ``"momentum"`` when the file holds θ' (``ema_model``), else ``"online"`` (θ, ``model``)."""
    if encoder is not None and encoder not in ENCODERS:
        raise DmireidError(f"encoder {encoder!r} is not one of {', '.join(ENCODERS)}")
    encoder = encoder or ("momentum" if state.get(EMA_MODEL_KEY) is not None else "online")
    weights = state.get(EMA_MODEL_KEY if encoder == "momentum" else MODEL_KEY)
    if weights is None:
        raise DmireidError(f"{source} holds no {encoder} encoder"
                           + (" (use encoder=online)" if encoder == "momentum" else ""))
    return encoder, weights


def infer_resnet_arch(state: dict, prefix: str = "") -> str:
    """resnet18 / resnet34 / resnet50 from a ResNet state_dict's keys (blocks in layer3, conv3)."""
    pattern = re.compile(re.escape(prefix) + r"layer3\.(\d+)\.")
    blocks = {int(m.group(1)) for k in state if (m := pattern.match(k))}
    bottleneck = f"{prefix}layer1.0.conv3.weight" in state
    arch = {(False, 2): "resnet18", (False, 6): "resnet34", (True, 6): "resnet50"}.get((bottleneck, len(blocks)))
    if arch is None:
        kind = "bottleneck" if bottleneck else "basic"
        raise ValueError(f"a ResNet with {len(blocks)} {kind} blocks in layer3 (supported: resnet18, resnet34, resnet50)")
    return arch


def load_weights(module: torch.nn.Module, weights: dict, source: str) -> None:
    """Strict load (:func:`dmireid.models.weights.load_state_strict`; files older than torch 0.4.1 may
    lack ``num_batches_tracked``): any key or shape difference is one line naming the first mismatched key."""
    load_state_strict(module, weights, source, "the model")


def _unwrap_state(state: dict) -> dict | None:
    if CONFIG_KEY in state:
        return None
    try:
        return unwrap_state(state, "weights", backbone_only=False)
    except DmireidError:
        return None


def _arch(weights: dict, source: str, prefix: str = "") -> str:
    try:
        return infer_resnet_arch(weights, prefix=prefix)
    except ValueError as exc:
        raise DmireidError(f"{source}: {exc}") from None


def load_encoder(state: dict, encoder: str | None = None, source: str = "checkpoint"):
    """A loaded weight file -> ``(model, encoder name, config or None, (height, width))``.

    ``model`` is on the CPU, in eval mode; ``config`` is the checkpoint's
    :class:`~dmireid.config.Config` (None for files without one). ``source`` names the file in errors.
    """
    if encoder is not None and encoder not in ENCODERS:
        raise DmireidError(f"encoder {encoder!r} is not one of {', '.join(ENCODERS)}")
    if CONFIG_KEY in state and (MODEL_KEY in state or EMA_MODEL_KEY in state):
        return _load_dmireid(state, encoder, source)
    weights = _unwrap_state(state)
    if weights and any(k.startswith("layer1.") for k in weights):
        return _load_torchvision(weights, encoder, source)
    if weights and any(k.startswith("backbone.layer1.") for k in weights):
        return _load_reid_state(weights, encoder, source)
    raise DmireidError(f"{source} is neither a dmireid checkpoint nor a torchvision ResNet state_dict")


def _load_torchvision(weights: dict, encoder: str | None, source: str):
    if encoder == "momentum":
        raise DmireidError(f"{source} is a plain ResNet weight file and holds no momentum encoder")
    arch = _arch(weights, source)
    model = build_model(arch, bn_group_size=0)
    load_weights(model.backbone, {k: v for k, v in weights.items() if not k.startswith("fc.")}, source)
    log.info("%s: torchvision %s weights, GeM pooling, fresh BN neck, %dx%d", source, arch, *DEFAULT_SIZE)
    return model.eval(), "online", None, DEFAULT_SIZE


def _load_reid_state(weights: dict, encoder: str | None, source: str):
    if encoder == "momentum":
        raise DmireidError(f"{source} is a bare model state_dict and holds no momentum encoder")
    model = build_model(_arch(weights, source, "backbone."), pooling="gem" if "pool.p" in weights else "avg",
                        bn_group_size=0)
    load_weights(model, weights, source)
    return model.eval(), "online", None, DEFAULT_SIZE


def _load_dmireid(state: dict, encoder: str | None, source: str):
    from .. import build  # the one model builder reads the checkpoint's config (the root, above this layer)

    try:
        cfg = config_from_dict(state[CONFIG_KEY])  # parsing: no plug-in imported, no objective needed
        encoder, weights = pick_encoder(state, encoder, source)
        # the checkpoint holds every weight (no download or file needed); eval mode uses running
        # statistics, so ghost BatchNorm groups make no difference
        model = build.model(cfg, for_inference=True)
    except DmireidError as exc:
        raise DmireidError(f"{source}: {exc}") from None
    load_weights(model, weights, source)
    return model.eval(), encoder, cfg, build.input_size(cfg)
