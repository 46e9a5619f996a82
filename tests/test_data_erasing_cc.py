"""erasing="cc": Cluster Contrast's RandomErasing (uniform aspect, 100 tries, ImageNet-mean fill)."""

import math
import random

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

from dmireid.data import IMAGENET_MEAN, build_train_transform
from dmireid.data.transforms import CCRandomErasing
from dmireid.errors import DmireidError


class TorchRandom:
    """The two calls of Python's ``random`` the peer makes, fed by torch's global RNG."""

    def uniform(self, a, b):
        return a + (b - a) * torch.rand((), dtype=torch.float64).item()

    def randint(self, a, b):  # inclusive, as random.randint
        return int(torch.randint(a, b + 1, ()).item())


def peer_erasing(img, rnd, probability=0.5, sl=0.02, sh=0.4, r1=0.3, mean=IMAGENET_MEAN):
    """The peer's RandomErasing.__call__ as a loop (clustercontrast/utils/data/transforms.py)."""
    if rnd.uniform(0, 1) >= probability:
        return img
    for _ in range(100):
        area = img.size()[1] * img.size()[2]
        target_area = rnd.uniform(sl, sh) * area
        aspect_ratio = rnd.uniform(r1, 1 / r1)
        h = int(round(math.sqrt(target_area * aspect_ratio)))
        w = int(round(math.sqrt(target_area / aspect_ratio)))
        if w < img.size()[2] and h < img.size()[1]:
            x1 = rnd.randint(0, img.size()[1] - h)
            y1 = rnd.randint(0, img.size()[2] - w)
            for c in range(3 if img.size()[0] == 3 else 1):
                img[c, x1:x1 + h, y1:y1 + w] = mean[c]
            return img
    return img


@pytest.mark.parametrize("shape", [(3, 64, 32), (1, 40, 40), (3, 9, 5)])
def test_equals_the_peer_loop_given_the_same_draws(shape):
    erase = CCRandomErasing()
    base = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    erased = 0
    for seed in range(400):
        torch.manual_seed(seed)
        ours = erase(base)
        torch.manual_seed(seed)
        theirs = peer_erasing(base.clone(), TorchRandom())
        assert torch.equal(ours, theirs), seed
        erased += not torch.equal(ours, base)
    assert torch.equal(base, torch.randn(shape, generator=torch.Generator().manual_seed(0)))  # input untouched
    assert 140 < erased < 230


def aspect_histogram(draw, n=20000, bins=10):
    """Histogram of h/w of ``draw()`` boxes over [0.3, 1/0.3] in equal-width bins."""
    ratios = []
    for _ in range(n):
        box = draw()
        ratios.append(box[2] / box[3])
    return np.histogram(ratios, bins=bins, range=(0.3, 1 / 0.3))[0]


def test_aspect_is_uniform_not_log_uniform():
    # constant area 2 % of a 4000×4000 canvas: no draw is rejected and h/w = aspect to < 0.5 %
    torch.manual_seed(0)
    erase = CCRandomErasing(p=1.0, sl=0.02, sh=0.02)
    counts = aspect_histogram(lambda: erase.box(4000, 4000))
    expected = np.full(10, 20000 / 10)  # uniform on [0.3, 3.33]: 10 equal bins of probability 0.1
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 30, (chi2, counts)  # chi-square, 9 degrees of freedom: P(> 30) < 0.001
    # torchvision's rule (log-uniform aspect) on the same canvas is far from it
    torch.manual_seed(0)
    tv = T.RandomErasing(p=1.0, scale=(0.02, 0.02), ratio=(0.3, 1 / 0.3))
    canvas = torch.zeros(1, 4000, 4000)
    log_counts = aspect_histogram(lambda: tv.get_params(canvas, tv.scale, tv.ratio, value=[0.0]))
    assert ((log_counts - expected) ** 2 / expected).sum() > 1000
    # log-uniform: P(first bin [0.3, 0.603]) = log(0.603/0.3) / log(1/0.09) = 0.2900 by hand
    assert abs(log_counts[0] / 20000 - 0.2900) < 0.015 and abs(counts[0] / 20000 - 0.1) < 0.01


def test_area_bounds_fill_values_and_probability():
    t = build_train_transform(64, 32, erasing="cc")
    erase = t.transforms[-1]
    assert isinstance(erase, CCRandomErasing)
    settings = (erase.p, erase.sl, erase.sh, erase.r1, erase.tries, erase.value)
    assert settings == (0.5, 0.02, 0.4, 0.3, 100, IMAGENET_MEAN)
    white = Image.new("RGB", (50, 90), (255, 255, 255))
    fill = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    erased, ratios = 0, []
    torch.manual_seed(0)
    for _ in range(600):
        out = t(white)
        hit = (out == fill).all(0)  # white/black pixels never normalise to the raw mean values
        if hit.any():
            erased += 1
            rows, cols = hit.any(1).nonzero().ravel(), hit.any(0).nonzero().ravel()
            h, w = int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)
            assert hit.sum() == h * w and (out == fill).any(0).equal(hit)  # one rectangle, all channels
            assert h < 64 and w < 32  # strict, as the peer
            # h, w = round(sqrt(area·r)), round(sqrt(area/r)): area within rounding of [0.02, 0.4]·H·W
            assert (math.sqrt(0.02 * 2048) - 1) ** 2 <= h * w <= (math.sqrt(0.4 * 2048) + 1) ** 2
            ratios.append(h / w)
    assert 250 < erased < 350
    assert min(ratios) > 0.3 * 0.5 and max(ratios) < 3.34 * 1.5


def test_uses_torch_rng_only_and_tries_100_times():
    erase = CCRandomErasing(p=1.0)
    random.seed(0)
    expected = random.random()
    random.seed(0)
    torch.manual_seed(3)
    a = erase(torch.zeros(3, 64, 32))
    assert random.random() == expected  # Python's random is untouched
    torch.manual_seed(3)
    assert torch.equal(a, erase(torch.zeros(3, 64, 32)))
    # a 1×1000 canvas fits no box (h >= 2 always): 100 tries of 2 draws after the p draw, then unchanged
    torch.manual_seed(7)
    assert erase.box(1, 1000) is None
    after = torch.rand(())
    torch.manual_seed(7)
    torch.rand(1 + 2 * 100, dtype=torch.float64)
    assert torch.equal(after, torch.rand(()))


def test_options_and_errors():
    assert isinstance(build_train_transform(64, 32).transforms[-1], CCRandomErasing)  # the default (= data.erasing)
    assert isinstance(build_train_transform(64, 32, erasing="torchvision").transforms[-1], T.RandomErasing)
    assert build_train_transform(64, 32, erase_value=0.0, erasing="cc").transforms[-1].value == (0.0, 0.0, 0.0)
    with pytest.raises(DmireidError, match="erasing 'random'.*data.erasing"):
        build_train_transform(64, 32, erasing="random")
    assert "CCRandomErasing(p=0.5" in repr(CCRandomErasing())
