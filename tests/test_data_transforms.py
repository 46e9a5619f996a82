"""Train/test transforms (spec §2), ImageDataset on broken files, check_images."""

import numpy as np
import pytest
import torch
from PIL import Image

from dmireid.data import (IMAGENET_MEAN, IMAGENET_STD, ImageDataset, build_test_transform, build_train_transform,
                          check_images, read_image)


def white(w=50, h=90):
    return Image.new("RGB", (w, h), (255, 255, 255))


def test_shapes_and_dtype():
    for transform in (build_train_transform(64, 32), build_test_transform(64, 32)):
        for size in ((50, 90), (200, 100), (16, 16)):
            out = transform(white(*size))
            assert out.shape == (3, 64, 32) and out.dtype == torch.float32


def test_test_transform_is_deterministic_and_normalised():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 50, 3), dtype=np.uint8))
    t = build_test_transform(64, 32)
    torch.manual_seed(0)
    a = t(image)
    torch.manual_seed(1)
    assert torch.equal(a, t(image))
    grey = t(Image.new("RGB", (50, 90), (51, 102, 204)))
    expected = (torch.tensor([51, 102, 204]) / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(grey, expected[:, None, None].expand(3, 64, 32), atol=1e-5)


def test_train_transform_is_random_flips_and_pads():
    # left half black, right half white: a flip or shift changes the output
    arr = np.zeros((64, 32, 3), np.uint8)
    arr[:, 16:] = 255
    t = build_train_transform(64, 32)
    torch.manual_seed(0)
    outs = [t(Image.fromarray(arr)) for _ in range(40)]
    assert len({o.numpy().tobytes() for o in outs}) > 20
    left_bright = sum(o[0, 32, 4] > o[0, 32, 27] for o in outs)
    assert 5 < left_bright < 35  # flipped about half the time
    pad_value = (0 - IMAGENET_MEAN[0]) / IMAGENET_STD[0]  # zero padding shows as black after a shift
    assert any(torch.isclose(o[0], torch.tensor(pad_value), atol=1e-4).all(1).any() for o in outs)


def test_random_erasing_fill_area_and_probability():
    t = build_train_transform(64, 32, erasing="torchvision")
    erasing = t.transforms[-1]
    assert (erasing.p, erasing.scale, erasing.value) == (0.5, (0.02, 0.4), IMAGENET_MEAN)
    assert erasing.ratio == pytest.approx((0.3, 1 / 0.3))
    torch.manual_seed(0)
    erased = 0
    for _ in range(200):
        out = t(white())  # white/black pixels never normalise to the raw mean values: those are erased
        is_fill = out == torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        zero = is_fill.all(0)
        if zero.any():
            erased += 1
            rows, cols = zero.any(1).nonzero().ravel(), zero.any(0).nonzero().ravel()
            h, w = int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)
            assert zero.sum() == h * w  # one rectangle
            assert 0.02 * 64 * 32 - 1 <= h * w <= 0.4 * 64 * 32 + 1
            assert is_fill.any(0).equal(zero)  # all channels erased together
    assert 70 < erased < 130


def test_erase_value_option():
    t = build_train_transform(64, 32, erase_value=0.0)
    assert t.transforms[-1].value == 0.0


# ------------------------------------------------------------------------------- ImageDataset


@pytest.fixture
def image_files(tmp_path):
    good = tmp_path / "good.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 30, 3), dtype=np.uint8)).save(good, quality=95)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"not an image at all")
    grey = tmp_path / "grey.png"
    Image.new("L", (30, 60), 100).save(grey)
    return {"good": str(good), "truncated": str(truncated), "garbage": str(garbage), "grey": str(grey),
            "missing": str(tmp_path / "missing.jpg")}


def test_image_dataset_good_and_broken(image_files):
    names = ["good", "truncated", "garbage", "grey", "missing"]
    ds = ImageDataset([(image_files[n], 1, 0) for n in names], build_test_transform(64, 32))
    assert len(ds) == 5
    results = [ds[i] for i in range(5)]
    assert [ok for _, _, ok in results] == [True, False, False, True, False]
    assert [i for _, i, _ in results] == [0, 1, 2, 3, 4]
    for image, _, ok in results:
        assert image.shape == (3, 64, 32)
        assert ok == bool(image.abs().sum() > 0)  # broken -> exactly zero
    assert read_image(image_files["grey"]).mode == "RGB"


def test_image_dataset_in_a_dataloader(image_files):
    ds = ImageDataset([(image_files["good"], 1, 0), (image_files["truncated"], 1, 0)], build_train_transform(64, 32))
    images, index, ok = next(iter(torch.utils.data.DataLoader(ds, batch_size=2)))
    assert images.shape == (2, 3, 64, 32) and index.tolist() == [0, 1] and ok.tolist() == [True, False]


def test_check_images(image_files):
    bad = check_images(list(image_files.values()), progress=False)
    assert [p for p, _ in bad] == [image_files[n] for n in ("truncated", "garbage", "missing")]
    assert all(reason and "\n" not in reason for _, reason in bad)
    assert "truncated" in bad[0][1]
