"""Embed images with a trained model: :class:`FeatureExtractor`, the checkpoint-loading callable.

    from dmireid import FeatureExtractor
    fx = FeatureExtractor("runs/demo/last.pt")            # momentum encoder when the file has one
    feats = fx(["a.jpg", "b.jpg"])                         # 2×d CPU float32, unit rows
    feats = fx([pil_image, hwc_uint8_array])               # same preprocessing as the test transform
    feats = fx(batch)                                      # N×3×H×W tensor: already preprocessed
    feats, ok = fx.extract(paths, on_unreadable="skip")    # unreadable files: zero rows, ok False
    d = 2 - 2 * feats @ feats.T                            # squared Euclidean, as evaluation uses

It loads the weights (:func:`~dmireid.embedding.encoder.load_encoder`: dmireid checkpoints and
torchvision ResNet files) and runs the one extraction loop
(:func:`~dmireid.embedding.extract.extract_from_dataset`) that training and evaluation use
through :func:`~dmireid.embedding.extract.extract_features`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from .checkpoint import load_checkpoint
from ..data import build_test_transform
from ..devices import resolve_device
from ..errors import DmireidError
from .extract import check_policy, embed_batch, extract_from_dataset
from .inputs import ImageItems, TensorItems
from .encoder import ENCODERS, load_encoder

log = logging.getLogger(__name__)


class FeatureExtractor:
    """Callable that embeds images with a checkpoint's encoder (eval mode, no grad).

    ``checkpoint``: a dmireid ``.pt`` checkpoint, a torchvision ResNet state_dict file, or an
    already loaded checkpoint dict. ``device``: ``cpu``, ``cuda``, ``cuda:N`` or None/``auto``
    (CUDA when available). ``encoder``: ``"momentum"`` (θ', the default when the
    checkpoint holds one) or ``"online"`` (θ). ``flip``: average the features of each image and its
    mirror image (then renormalise). Attributes: ``model`` (eval mode, on ``device``),
    ``transform`` (the test transform), ``height``, ``width``, ``feature_dim``, ``encoder``,
    ``config`` (the checkpoint's :class:`~dmireid.config.Config`, None for a torchvision file).
    ``source``: how errors and :meth:`settings` name a checkpoint given as a dict (its file name).
    """

    def __init__(self, checkpoint: str | Path | dict, device: str | torch.device | None = None,
                 batch_size: int = 64, encoder: str | None = None, flip: bool = False, num_workers: int = 0,
                 source: str | None = None):
        if encoder is not None and encoder not in ENCODERS:
            raise DmireidError(f"encoder {encoder!r} is not one of {', '.join(ENCODERS)}")
        if batch_size < 1:
            raise DmireidError(f"batch_size must be >= 1, got {batch_size}")
        self.source = source or ("checkpoint" if isinstance(checkpoint, dict) else str(checkpoint))
        self.batch_size, self.flip, self.num_workers = int(batch_size), bool(flip), int(num_workers)
        self.device = resolve_device(device)
        state = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
        model, self.encoder, self.config, (self.height, self.width) = load_encoder(state, encoder, self.source)
        self.model = model.to(self.device).eval()
        self.feature_dim: int = int(model.feature_dim)
        self.transform = build_test_transform(self.height, self.width)

    def settings(self) -> dict[str, Any]:
        """What determines the features: stored next to them by ``dmireid extract``."""
        return {"checkpoint": self.source, "encoder": self.encoder, "flip": self.flip, "height": self.height,
                "width": self.width, "feature_dim": self.feature_dim}

    def __repr__(self) -> str:
        return (f"FeatureExtractor({self.source!r}, encoder={self.encoder}, {self.height}x{self.width}, "
                f"d={self.feature_dim}, device={self.device}, flip={self.flip})")

    def embed_batch(self, batch: torch.Tensor) -> torch.Tensor:
        """A preprocessed N×3×H×W batch -> N×d unit rows on the model's device (flip-averaged if set)."""
        return embed_batch(self.model, batch, self.device, flip=self.flip)

    def extract(self, images, progress: bool = False, on_unreadable: str = "stop") -> tuple[torch.Tensor, np.ndarray]:
        """Embed ``images`` -> ``(N×d CPU float32 unit rows, ok: bool N)``.

        ``images``: a list of paths / PIL images / H×W×3 uint8 arrays (each resized and normalised
        like the test transform), one such item, an N×H×W×3 uint8 array, or an N×3×H×W float tensor
        taken as an already preprocessed batch (used as is). ``on_unreadable="stop"`` raises a
        :class:`DmireidError` naming the first unreadable file; ``"skip"`` gives its row as zeros
        and ``ok`` False.
        """
        check_policy(on_unreadable)
        if isinstance(images, torch.Tensor):
            dataset, pin = TensorItems(images), False
        else:
            if isinstance(images, (str, os.PathLike, Image.Image)) or (isinstance(images, np.ndarray)
                                                                        and images.ndim in (2, 3)):
                images = [images]
            dataset, pin = ImageItems(list(images), self.transform), None
        if len(dataset) == 0:
            return torch.zeros((0, self.feature_dim), dtype=torch.float32), np.zeros(0, dtype=bool)
        return extract_from_dataset(self.model, dataset, self.batch_size, self.device,
                                    self.num_workers if isinstance(dataset, ImageItems) else 0, flip=self.flip,
                                    on_unreadable=on_unreadable, distributed=False, progress=progress,
                                    pin_memory=pin)

    def __call__(self, images, progress: bool = False) -> torch.Tensor:
        """Embed ``images`` (see :meth:`extract`) -> N×d CPU float32 tensor with L2-normalised rows.

        An unreadable file raises :class:`DmireidError` naming it.
        """
        return self.extract(images, progress)[0]


@dataclass
class EmbeddedFiles:
    """The readable files of a list, their features, and the unreadable ones (left out)."""

    paths: list[str]
    features: torch.Tensor  # len(paths)×d unit rows
    skipped: list[str] = field(default_factory=list)


def embed_files(extractor: FeatureExtractor, paths: Sequence[str | Path], skip_unreadable: bool = False,
                progress: bool = False) -> EmbeddedFiles:
    """Embed image files; ``skip_unreadable``: leave out (and list in ``.skipped``) those that cannot
    be decoded, else the first one stops with a one-line error naming it."""
    paths = [str(p) for p in paths]
    features, ok = extractor.extract(paths, progress=progress, on_unreadable="skip" if skip_unreadable else "stop")
    return EmbeddedFiles([p for p, good in zip(paths, ok) if good], features[torch.from_numpy(ok)],
                         [p for p, good in zip(paths, ok) if not good])


def skipped_note(skipped: Sequence[str]) -> str:
    """``skipped 2 unreadable images, the first a/b.jpg`` ("" when none was skipped)."""
    if not skipped:
        return ""
    return f"skipped {len(skipped)} unreadable image{'s' if len(skipped) != 1 else ''}, the first {skipped[0]}"
