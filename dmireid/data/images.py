"""Reading images: a torch Dataset that never raises on a bad file, and a decoding check.

    ds = ImageDataset(dataset.train, build_test_transform(256, 128))
    image, index, ok = ds[0]          # image: 3×256×128; ok False -> zero image (unreadable file)
    bad = check_images([p for p, _, _ in dataset.train])   # [(path, reason), ...]
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
from PIL import Image
from ..progress import progress_bar

from .samples import Sample

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")  # the files a folder of images is read for


def read_image(path: str) -> Image.Image:
    """Fully decoded RGB PIL image (raises OSError and friends on a broken file)."""
    with Image.open(path) as image:
        return image.convert("RGB")


def _reason(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())


class ImageDataset(torch.utils.data.Dataset):
    """``samples`` (path, pid, camid) -> ``(transform(image), index, ok)``.

    An unreadable or truncated file gives a zero tensor of the transform's output shape and
    ``ok=False`` (logged as a warning); the caller decides whether to skip or stop.
    """

    def __init__(self, samples: Sequence[Sample], transform: Callable[[Image.Image], torch.Tensor]):
        self.samples = list(samples)
        self.transform = transform
        self._blank_shape = None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, bool]:
        path = self.samples[index][0]
        try:
            image = read_image(path)
        except Exception as exc:  # noqa: BLE001 - any decoding failure is reported, not raised
            log.warning("unreadable image %s (%s)", path, _reason(exc))
            return self._blank(), index, False
        return self.transform(image), index, True

    def _blank(self) -> torch.Tensor:
        """Zeros shaped like the transform's output (computed once from a grey image)."""
        if self._blank_shape is None:
            self._blank_shape = tuple(self.transform(Image.new("RGB", (64, 128), (128, 128, 128))).shape)
        return torch.zeros(self._blank_shape)


def check_images(paths: Sequence[str], progress: bool = True) -> list[tuple[str, str]]:
    """Decode every image; returns ``(path, reason)`` for each one that cannot be read."""
    bad = []
    for path in progress_bar(paths, desc="checking images", unit="img", enabled=progress):
        try:
            with Image.open(path) as image:
                image.load()
        except Exception as exc:  # noqa: BLE001
            bad.append((str(path), _reason(exc)))
    return bad
