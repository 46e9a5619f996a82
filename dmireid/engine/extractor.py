"""Embed images with a trained model: :class:`FeatureExtractor`.

    from dmireid import FeatureExtractor
    fx = FeatureExtractor("runs/demo/last.pt")            # momentum encoder when the file has one
    feats = fx(["a.jpg", "b.jpg"])                         # 2×d CPU float32, unit rows
    feats = fx([pil_image, hwc_uint8_array])               # same preprocessing as the test transform
    feats = fx(batch)                                      # N×3×H×W tensor: already preprocessed
    d = 2 - 2 * feats @ feats.T                            # squared Euclidean, as evaluation uses

Two kinds of weight files load:

- a dmireid checkpoint (``{"config", "model", "ema_model", ...}``): the model its config describes,
  the momentum encoder (``ema_model``) by default when present, ``encoder="online"`` for θ;
- a plain torchvision ResNet state_dict (``conv1.weight``, ``layer1.0...``, ``fc.*``): the ReID model
  of spec §2 (last stride 1, GeM, fresh BN neck) on that backbone at 256×128 — the model training
  starts from. The architecture is read off the keys (resnet18 / resnet34 / resnet50).
"""

from __future__ import annotations

import copy
import glob
import logging
import os
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..errors import DmireidError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
ENCODERS = ("online", "momentum")
DEFAULT_SIZE = (256, 128)


# ---------------------------------------------------------------------------------------- inputs
def collect_image_paths(specs: Iterable[str | Path]) -> list[str]:
    """Image files named by ``specs``: files, folders (recursive, image extensions) or globs.

    Order: each spec in turn, a folder's or glob's files sorted by path; duplicates dropped.
    A spec that names nothing raises :class:`DmireidError` naming it.
    """
    paths: list[str] = []
    for spec in specs:
        spec = str(spec)
        path = Path(spec)
        if path.is_dir():
            found = sorted(str(Path(d) / f) for d, _, names in os.walk(path) for f in names
                           if Path(f).suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise DmireidError(f"{spec}: no images in this folder (expected {', '.join(IMAGE_EXTENSIONS)} files)")
        elif path.is_file():
            found = [spec]
        elif glob.has_magic(spec):
            found = sorted(p for p in glob.glob(spec, recursive=True)
                           if Path(p).is_file() and Path(p).suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise DmireidError(f"{spec}: the pattern matches no image files")
        else:
            raise DmireidError(f"{spec}: no such file or folder")
        paths.extend(found)
    return list(dict.fromkeys(paths))


def _check_item(item: Any, index: int) -> None:
    """Raise a one-line error for an item that is not a path, a PIL image or a uint8 image array."""
    if isinstance(item, (str, os.PathLike, Image.Image)):
        return
    if isinstance(item, np.ndarray):
        if item.dtype == np.uint8 and (item.ndim == 2 or (item.ndim == 3 and item.shape[2] in (1, 3, 4))):
            return
        raise DmireidError(f"image {index}: arrays must be H×W×3 (or H×W, H×W×4) uint8, got {item.dtype} {item.shape}")
    raise DmireidError(f"image {index}: cannot embed an item of type {type(item).__name__} "
                       f"(expected a path, a PIL image, a uint8 array or an N×3×H×W tensor)")


def _to_pil(item: Any) -> Image.Image:
    """A path, PIL image or H×W(×C) uint8 array -> RGB PIL image (raises on an unreadable file)."""
    if isinstance(item, (str, os.PathLike)):
        from ..data import read_image  # the decoding evaluation uses

        return read_image(item)
    if isinstance(item, Image.Image):
        return item.convert("RGB")
    if item.ndim == 3 and item.shape[2] == 1:
        item = item[:, :, 0]
    return Image.fromarray(np.ascontiguousarray(item)).convert("RGB")


class _Items(Dataset):
    """Items -> (transformed tensor, index, error message or "")."""

    def __init__(self, items: Sequence[Any], transform):
        self.items, self.transform = items, transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        try:
            image = _to_pil(self.items[index])
        except Exception as exc:  # noqa: BLE001 - reported as one line by the caller
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
            return torch.zeros(0), index, reason or type(exc).__name__
        return self.transform(image), index, ""


# ---------------------------------------------------------------------------------------- loading
def _unwrap_state(state: dict) -> dict:
    for key in ("state_dict", "model"):
        if isinstance(state.get(key), dict) and "config" not in state:
            state = state[key]
    if state and all(isinstance(k, str) and k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


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


def _is_tensor_dict(state: Any) -> bool:
    return isinstance(state, dict) and bool(state) and all(isinstance(v, torch.Tensor) for v in state.values())


class FeatureExtractor:
    """Callable that embeds images with a checkpoint's encoder (eval mode, no grad).

    ``checkpoint``: a dmireid ``.pt`` checkpoint, a torchvision ResNet state_dict file, or an
    already loaded checkpoint dict. ``device``: ``cpu``, ``cuda``, ``cuda:N`` or None/``auto``
    (CUDA when available). ``encoder``: ``"momentum"`` (θ', the default when the
    checkpoint holds one) or ``"online"`` (θ). ``flip``: average the features of each image and its
    mirror image (then renormalise). Attributes: ``model`` (eval mode, on ``device``),
    ``transform`` (the test transform), ``height``, ``width``, ``feature_dim``, ``encoder``,
    ``config`` (the checkpoint's :class:`~dmireid.config.Config`, None for a torchvision file).
    """

    def __init__(self, checkpoint: str | Path | dict, device: str | torch.device | None = None,
                 batch_size: int = 64, encoder: str | None = None, flip: bool = False, num_workers: int = 0):
        from ..data import build_test_transform
        from .trainer import resolve_device

        if encoder is not None and encoder not in ENCODERS:
            raise DmireidError(f"encoder {encoder!r} is not one of {', '.join(ENCODERS)}")
        if batch_size < 1:
            raise DmireidError(f"batch_size must be >= 1, got {batch_size}")
        self.source = "checkpoint" if isinstance(checkpoint, dict) else str(checkpoint)
        self.batch_size, self.flip, self.num_workers = int(batch_size), bool(flip), int(num_workers)
        self.device = resolve_device(str(device) if device is not None else "auto")
        self.config = None
        model, self.encoder, (self.height, self.width) = self._load(checkpoint, encoder)
        self.model = model.to(self.device).eval()
        self.feature_dim: int = int(model.feature_dim)
        self.transform = build_test_transform(self.height, self.width)

    # ------------------------------------------------------------------------------ loading
    def _load(self, checkpoint, encoder):
        from ..checkpoint import load_checkpoint

        state = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
        if "config" in state and ("model" in state or "ema_model" in state):
            return self._load_dmireid(state, encoder)
        weights = _unwrap_state(state)
        if _is_tensor_dict(weights) and any(k.startswith("layer1.") for k in weights):
            return self._load_torchvision(weights, encoder)
        if _is_tensor_dict(weights) and any(k.startswith("backbone.layer1.") for k in weights):
            return self._load_reid_state(weights, encoder)
        raise DmireidError(f"{self.source} is neither a dmireid checkpoint nor a torchvision ResNet state_dict")

    def _load_dmireid(self, state: dict, encoder: str | None):
        from ..config import load_config
        from .trainer import build_model_from_config

        try:
            cfg = load_config(base=state["config"])
        except DmireidError as exc:
            raise DmireidError(f"{self.source}: {exc}") from None
        self.config = cfg
        encoder = encoder or ("momentum" if state.get("ema_model") is not None else "online")
        weights = state.get("ema_model" if encoder == "momentum" else "model")
        if weights is None:
            raise DmireidError(f"{self.source} holds no {encoder} encoder"
                               + (" (use encoder=online)" if encoder == "momentum" else ""))
        built = copy.deepcopy(cfg)
        built.model.pretrained = None  # the checkpoint holds every weight; no download or file needed
        built.model.bn_group_size = 0  # eval mode uses running statistics either way
        model = build_model_from_config(built)
        self._load_weights(model, weights)
        return model, encoder, (cfg.data.height, cfg.data.width)

    def _load_torchvision(self, weights: dict, encoder: str | None):
        from ..models import build_model

        if encoder == "momentum":
            raise DmireidError(f"{self.source} is a plain ResNet weight file and holds no momentum encoder")
        try:
            arch = infer_resnet_arch(weights)
        except ValueError as exc:
            raise DmireidError(f"{self.source}: {exc}") from None
        model = build_model(arch)
        self._load_weights(model.backbone, {k: v for k, v in weights.items() if not k.startswith("fc.")})
        log.info("%s: torchvision %s weights, GeM pooling, fresh BN neck, %dx%d", self.source, arch, *DEFAULT_SIZE)
        return model, "online", DEFAULT_SIZE

    def _load_reid_state(self, weights: dict, encoder: str | None):
        from ..models import build_model

        if encoder == "momentum":
            raise DmireidError(f"{self.source} is a bare model state_dict and holds no momentum encoder")
        try:
            arch = infer_resnet_arch(weights, prefix="backbone.")
        except ValueError as exc:
            raise DmireidError(f"{self.source}: {exc}") from None
        model = build_model(arch, pooling="gem" if "pool.p" in weights else "avg")
        self._load_weights(model, weights)
        return model, "online", DEFAULT_SIZE

    def _load_weights(self, module: torch.nn.Module, weights: dict) -> None:
        """Strict load, except that files older than torch 0.4.1 lack ``num_batches_tracked``."""
        try:
            result = module.load_state_dict(weights, strict=False)
        except RuntimeError as exc:  # shape mismatch
            first = next((line.strip() for line in str(exc).splitlines()[1:] if line.strip()), str(exc))
            raise DmireidError(f"{self.source}: the weights do not fit the model ({first[:200]})") from None
        missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
        problems = ([f"missing {', '.join(missing[:3])}"] if missing else []) + \
                   ([f"unexpected {', '.join(result.unexpected_keys[:3])}"] if result.unexpected_keys else [])
        if problems:
            raise DmireidError(f"{self.source}: the weights do not fit the model ({'; '.join(problems)})")

    def settings(self) -> dict[str, Any]:
        """What determines the features: stored next to them by ``dmireid extract``."""
        return {"checkpoint": self.source, "encoder": self.encoder, "flip": self.flip, "height": self.height,
                "width": self.width, "feature_dim": self.feature_dim}

    # ------------------------------------------------------------------------------ embedding
    def __repr__(self) -> str:
        return (f"FeatureExtractor({self.source!r}, encoder={self.encoder}, {self.height}x{self.width}, "
                f"d={self.feature_dim}, device={self.device}, flip={self.flip})")

    @torch.no_grad()
    def embed_batch(self, batch: torch.Tensor) -> torch.Tensor:
        """A preprocessed N×3×H×W batch -> N×d unit rows on the model's device (flip-averaged if set)."""
        batch = batch.to(self.device, dtype=torch.float32)
        features = F.normalize(self.model(batch).float(), dim=1)
        if self.flip:
            flipped = F.normalize(self.model(torch.flip(batch, dims=[3])).float(), dim=1)
            features = F.normalize(features + flipped, dim=1)
        return features

    def __call__(self, images, progress: bool = False) -> torch.Tensor:
        """Embed ``images`` -> N×d CPU float32 tensor with L2-normalised rows.

        ``images``: a list of paths / PIL images / H×W×3 uint8 arrays (each resized and normalised
        like the test transform), one such item, an N×H×W×3 uint8 array, or an N×3×H×W float tensor
        taken as an already preprocessed batch (used as is, processed in ``batch_size`` chunks).
        An unreadable file raises :class:`DmireidError` naming it.
        """
        if isinstance(images, torch.Tensor):
            return self._embed_tensor(images, progress)
        if isinstance(images, (str, os.PathLike, Image.Image)) or (isinstance(images, np.ndarray) and images.ndim in (2, 3)):
            images = [images]
        items = list(images)
        for i, item in enumerate(items):
            _check_item(item, i)
        if not items:
            return torch.zeros((0, self.feature_dim), dtype=torch.float32)
        loader = DataLoader(_Items(items, self.transform), batch_size=self.batch_size, shuffle=False,
                            num_workers=self.num_workers, collate_fn=_collate,
                            pin_memory=self.device.type == "cuda")
        out = []
        with tqdm(total=len(items), desc="extract", unit="img", disable=not progress, leave=False) as bar:
            for batch, index, errors in loader:
                bad = [i for i, e in zip(index, errors) if e]
                if bad:
                    item = items[bad[0]]
                    name = str(item) if isinstance(item, (str, os.PathLike)) else f"item {bad[0]}"
                    raise DmireidError(f"cannot read image {name} ({errors[index.index(bad[0])]})")
                out.append(self.embed_batch(batch).cpu())
                bar.update(len(index))
        return torch.cat(out)

    def _embed_tensor(self, images: torch.Tensor, progress: bool) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3 or not images.is_floating_point():
            raise DmireidError(f"a tensor input must be a preprocessed N×3×H×W float batch, got "
                               f"{images.dtype} {tuple(images.shape)}")
        chunks = range(0, images.shape[0], self.batch_size)
        out = [self.embed_batch(images[i:i + self.batch_size]).cpu()
               for i in tqdm(chunks, desc="extract", unit="batch", disable=not progress, leave=False)]
        return torch.cat(out) if out else torch.zeros((0, self.feature_dim), dtype=torch.float32)


def _collate(batch):
    index = [b[1] for b in batch]
    errors = [b[2] for b in batch]
    good = [b[0] for b in batch if not b[2]]
    return (torch.stack(good) if good else torch.zeros(0)), index, errors
