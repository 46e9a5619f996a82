"""What a model can be given to embed: image files named on a command line, and in-memory items.

    paths = collect_image_paths(["crops/", "extra/*.jpg", "one.png"])   # sorted per spec, no duplicates
    dataset = ImageItems(["a.jpg", pil_image, hwc_uint8_array], transform)
    image, index, ok = dataset[0]        # ok False -> zero image (unreadable item), as ImageDataset does

Both datasets here yield ``(3×H×W float tensor, index, ok)``, the items of the one extraction loop
(:func:`dmireid.embedding.extract.extract_from_dataset`).
"""

from __future__ import annotations

import glob
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..data import ImageDataset, read_image
from ..data.images import IMAGE_EXTENSIONS
from ..errors import DmireidError

log = logging.getLogger(__name__)



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


def check_item(item: Any, index: int) -> None:
    """Raise a one-line error for an item that is not a path, a PIL image or a uint8 image array."""
    if isinstance(item, (str, os.PathLike, Image.Image)):
        return
    if isinstance(item, np.ndarray):
        if item.dtype == np.uint8 and (item.ndim == 2 or (item.ndim == 3 and item.shape[2] in (1, 3, 4))):
            return
        raise DmireidError(f"image {index}: arrays must be H×W×3 (or H×W, H×W×4) uint8, got {item.dtype} {item.shape}")
    raise DmireidError(f"image {index}: cannot embed an item of type {type(item).__name__} "
                       f"(expected a path, a PIL image, a uint8 array or an N×3×H×W tensor)")


def to_pil(item: Any) -> Image.Image:
    """A path, PIL image or H×W(×C) uint8 array -> RGB PIL image (raises on an unreadable file)."""
    if isinstance(item, (str, os.PathLike)):
        return read_image(item)  # the decoding evaluation uses
    if isinstance(item, Image.Image):
        return item.convert("RGB")
    if item.ndim == 3 and item.shape[2] == 1:
        item = item[:, :, 0]
    return Image.fromarray(np.ascontiguousarray(item)).convert("RGB")


def item_name(item: Any, index: int) -> str:
    """A path as it was given; any other item as ``item <index>``."""
    return str(item) if isinstance(item, (str, os.PathLike)) else f"item {index}"


def unreadable_reason(item: Any) -> str:
    """Why ``item`` cannot be decoded (one line, ≤ 200 characters); "" when it can."""
    try:
        to_pil(item)
    except Exception as exc:  # noqa: BLE001 - reported as one line
        return " ".join(f"{type(exc).__name__}: {exc}".split())[:200] or type(exc).__name__
    return ""


def describe_unreadable(item: Any, index: int) -> str:
    """``name (reason)`` of an unreadable item, for a one-line error."""
    reason = unreadable_reason(item)
    return f"{item_name(item, index)} ({reason})" if reason else item_name(item, index)


class ImageItems(ImageDataset):
    """Paths / PIL images / uint8 arrays -> ``(transform(image), index, ok)``: an
    :class:`~dmireid.data.ImageDataset` whose entries are the items themselves (``.items``).

    An unreadable item gives zeros of the transform's output shape and ``ok=False``; the extraction
    loop's ``on_unreadable`` policy decides what happens next (a one-line error, or a list).
    """

    def __init__(self, items: Sequence[Any], transform):
        super().__init__(list(items), transform)
        for i, item in enumerate(self.samples):
            check_item(item, i)

    @property
    def items(self) -> list[Any]:
        return self.samples

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, bool]:
        try:
            image = to_pil(self.items[index])
        except Exception as exc:  # noqa: BLE001 - any decoding failure is reported, not raised
            log.debug("unreadable image %s (%s)", item_name(self.items[index], index),
                      " ".join(f"{type(exc).__name__}: {exc}".split()))
            return self._blank(), index, False
        return self.transform(image), index, True

    def describe(self, index: int) -> str:
        return describe_unreadable(self.items[index], index)


class TensorItems(Dataset):
    """An already preprocessed N×3×H×W float batch -> ``(x[i] as float32, i, True)``."""

    def __init__(self, images: torch.Tensor):
        if images.dim() != 4 or images.shape[1] != 3 or not images.is_floating_point():
            raise DmireidError(f"a tensor input must be a preprocessed N×3×H×W float batch, got "
                               f"{images.dtype} {tuple(images.shape)}")
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, bool]:
        return self.images[index], index, True

    def describe(self, index: int) -> str:
        return f"item {index}"
