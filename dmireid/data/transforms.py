"""Train / test image transforms (spec §2, the Cluster Contrast recipe), torchvision-based.

    t = build_train_transform(256, 128)
    t(pil_image).shape  # torch.Size([3, 256, 128])
"""

from __future__ import annotations

import torchvision.transforms as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_train_transform(height: int, width: int, erase_value=IMAGENET_MEAN) -> T.Compose:
    """PIL image -> 3×height×width float tensor: bicubic resize, flip 0.5, pad 10, random crop,
    ImageNet normalisation, random erasing (p 0.5, area 0.02-0.4, aspect 0.3-1/0.3).

    Erased pixels get ``erase_value`` in the normalised tensor; the default writes the ImageNet mean
    values (0.485, 0.456, 0.406) themselves into the normalised tensor, as Cluster Contrast does
    (spec §2); ``erase_value=0.0`` fills with the mean colour after normalisation instead.
    Randomness comes from torch's global RNG, as in torchvision.
    """
    return T.Compose([
        T.Resize((height, width), interpolation=T.InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(p=0.5),
        T.Pad(10),
        T.RandomCrop((height, width)),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        T.RandomErasing(p=0.5, scale=(0.02, 0.4), ratio=(0.3, 1 / 0.3), value=erase_value),
    ])


def build_test_transform(height: int, width: int) -> T.Compose:
    """PIL image -> 3×height×width tensor: bicubic resize, ImageNet normalisation (deterministic)."""
    return T.Compose([
        T.Resize((height, width), interpolation=T.InterpolationMode.BICUBIC),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])
