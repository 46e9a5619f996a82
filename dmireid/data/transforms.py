"""Train / test image transforms (spec §2, the Cluster Contrast recipe), torchvision-based.

    t = build_train_transform(256, 128)                  # erasing="cc" (default, the recipe's) or "torchvision"
    t(pil_image).shape  # torch.Size([3, 256, 128])
"""

from __future__ import annotations

import math

import torch
import torchvision.transforms as T

from ..errors import DmireidError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ERASING = ("torchvision", "cc")


class CCRandomErasing:
    """Cluster Contrast's random erasing (``clustercontrast/utils/data/transforms.py``), on a C×H×W tensor.

    With probability ``p``: up to ``tries`` draws of area ~ U(sl, sh)·H·W and aspect ~ U(r1, 1/r1)
    (uniform, not log-uniform as torchvision), h = round(sqrt(area·aspect)), w = round(sqrt(area/aspect))
    (round half to even, as Python's ``round``); the first with h < H and w < W is kept, its
    corner drawn uniformly (top in 0..H-h, left in 0..W-w) and filled with ``value[c]`` per
    channel (a 1-channel tensor gets ``value[0]``); no fit in ``tries`` draws: unchanged.
    Randomness comes from torch's global RNG (the per-sample seeding of the training loader).
    """

    def __init__(self, p: float = 0.5, sl: float = 0.02, sh: float = 0.4, r1: float = 0.3,
                 value=IMAGENET_MEAN, tries: int = 100):
        self.p, self.sl, self.sh, self.r1, self.tries = p, sl, sh, r1, tries
        self.value = tuple(value) if isinstance(value, (tuple, list)) else (float(value),) * 3

    @staticmethod
    def _uniform(low: float, high: float) -> float:
        return low + (high - low) * torch.rand((), dtype=torch.float64).item()

    def box(self, height: int, width: int) -> tuple[int, int, int, int] | None:
        """(top, left, h, w) of one erasing, or None (not erased); draws as :meth:`__call__` does."""
        if self._uniform(0.0, 1.0) >= self.p:
            return None
        for _ in range(self.tries):
            target = self._uniform(self.sl, self.sh) * height * width
            aspect = self._uniform(self.r1, 1 / self.r1)
            h, w = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
            if w < width and h < height:
                top = int(torch.randint(0, height - h + 1, ()).item())
                left = int(torch.randint(0, width - w + 1, ()).item())
                return top, left, h, w
        return None

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        box = self.box(img.shape[-2], img.shape[-1])
        if box is None:
            return img
        top, left, h, w = box
        img = img.clone()
        channels = range(3) if img.shape[0] == 3 else range(1)
        for c in channels:
            img[c, top:top + h, left:left + w] = self.value[c]
        return img

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(p={self.p}, sl={self.sl}, sh={self.sh}, r1={self.r1}, "
                f"value={self.value}, tries={self.tries})")


def build_train_transform(height: int, width: int, erase_value=IMAGENET_MEAN,
                          erasing: str = "cc") -> T.Compose:
    """PIL image -> 3×height×width float tensor: bicubic resize, flip 0.5, pad 10, random crop,
    ImageNet normalisation, random erasing (p 0.5, area 0.02-0.4, aspect 0.3-1/0.3).

    ``erasing``: ``cc`` (:class:`CCRandomErasing`: uniform aspect, 100 tries, as Cluster Contrast /
    DCMIP; the default, = ``data.erasing``) or ``torchvision`` (``T.RandomErasing``: log-uniform
    aspect, 10 tries).
    Erased pixels get ``erase_value`` in the normalised tensor; the default writes the ImageNet mean
    values (0.485, 0.456, 0.406) themselves into the normalised tensor, as Cluster Contrast does
    (spec §2); ``erase_value=0.0`` fills with the mean colour after normalisation instead.
    Randomness comes from torch's global RNG, as in torchvision.
    """
    if erasing not in ERASING:
        raise DmireidError(f"erasing {erasing!r} is not one of {', '.join(ERASING)} (data.erasing)")
    if erasing == "cc":
        erase = CCRandomErasing(p=0.5, sl=0.02, sh=0.4, r1=0.3, value=erase_value)
    else:
        erase = T.RandomErasing(p=0.5, scale=(0.02, 0.4), ratio=(0.3, 1 / 0.3), value=erase_value)
    return T.Compose([
        T.Resize((height, width), interpolation=T.InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(p=0.5),
        T.Pad(10),
        T.RandomCrop((height, width)),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        erase,
    ])


def build_test_transform(height: int, width: int) -> T.Compose:
    """PIL image -> 3×height×width tensor: bicubic resize, ImageNet normalisation (deterministic)."""
    return T.Compose([
        T.Resize((height, width), interpolation=T.InterpolationMode.BICUBIC),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])
