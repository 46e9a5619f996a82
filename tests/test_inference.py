"""dmireid.inference apart from training: the one extraction loop, its unreadable-image policy,
``--skip-unreadable`` on extract / search / cluster, the AMP decision, and imports without the trainer.

A tiny random-weight ResNet-18 at 64×32 (the smoke preset) on a few synthetic images.
"""

import contextlib
import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dmireid import devices
from dmireid.embedding.checkpoint import save_checkpoint
from dmireid.cli import main
from dmireid.config import load_config
from dmireid.data import build_test_transform
from dmireid.errors import DmireidError
from dmireid.evaluation.visualize import loss_keys, plot_training_curves
from dmireid import build
from dmireid.embedding import FeatureExtractor, extract_features, extract_from_dataset
from dmireid.embedding.inputs import ImageItems


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = build.model(load_config("smoke"))
    g = torch.Generator().manual_seed(1)
    for m in net.modules():  # non-trivial running statistics: eval mode must be used
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(1 + 0.2 * torch.rand(m.running_var.shape, generator=g))
    return net


@pytest.fixture(scope="module")
def ckpt(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "last.pt"
    save_checkpoint({"config": load_config("smoke").to_dict(), "epoch": 1, "model": model.state_dict(),
                     "ema_model": None}, path)
    return path


@pytest.fixture(scope="module")
def crops(synthetic_root, tmp_path_factory):
    """A folder of 9 good JPEGs (3 images × 3 copies) and one truncated JPEG, ``c_broken.jpg``."""
    folder = tmp_path_factory.mktemp("crops")
    sources = sorted((synthetic_root / "bounding_box_test").glob("*.jpg"))
    for i, src in enumerate(sources[:3]):
        for copy in range(3):
            shutil.copy(src, folder / f"img{i}_{copy}.jpg")
    data = sources[5].read_bytes()
    (folder / "c_broken.jpg").write_bytes(data[: len(data) // 2])
    good = sorted(str(p) for p in folder.glob("img*.jpg"))
    return folder, good, str(folder / "c_broken.jpg")


def direct_features(model, paths, height, width, batch_size, flip=False):
    """The independent form: decode, test transform, model(batch) in eval mode, L2-normalise."""
    transform = build_test_transform(height, width)
    model.eval()
    rows = []
    with torch.no_grad():
        for start in range(0, len(paths), batch_size):
            batch = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths[start:start + batch_size]])
            f = F.normalize(model(batch), dim=1)
            if flip:
                f = F.normalize(f + F.normalize(model(batch.flip(3)), dim=1), dim=1)
            rows.append(f)
    return torch.cat(rows)


# ------------------------------------------------------------------------------------ the loop
def test_one_loop_equals_a_direct_model_loop(model, crops):
    _, good, broken = crops
    model.train()
    features, ok = extract_features(model, [(p, 0, 0) for p in good], 64, 32, batch_size=4, num_workers=0, progress=False)
    assert model.training  # the caller's mode is restored
    assert ok.all() and features.dtype == torch.float32 and features.shape == (9, 512)
    assert torch.equal(features, direct_features(model, good, 64, 32, batch_size=4))
    # an unreadable image: zero row, ok False; every other row unchanged (training's contract)
    samples = [(p, 0, 0) for p in good[:4] + [broken] + good[4:]]
    features, ok = extract_features(model, samples, 64, 32, batch_size=4, num_workers=0, progress=False)
    assert ok.tolist() == [True] * 4 + [False] + [True] * 5
    assert torch.equal(features[4], torch.zeros(512))
    torch.testing.assert_close(features[ok], direct_features(model, good, 64, 32, batch_size=4), atol=1e-6, rtol=0)
    with pytest.raises(DmireidError, match="c_broken.jpg") as info:
        extract_features(model, samples, 64, 32, batch_size=4, num_workers=0, progress=False, on_unreadable="stop")
    assert "\n" not in str(info.value) and "--skip-unreadable" in str(info.value)
    with pytest.raises(DmireidError, match="on_unreadable 'drop' is not one of stop, skip"):
        extract_features(model, samples, 64, 32, progress=False, on_unreadable="drop")


def test_extractor_uses_the_same_loop_with_flip(model, ckpt, crops):
    _, good, broken = crops
    fx = FeatureExtractor(ckpt, device="cpu", batch_size=4, flip=True)
    assert torch.equal(fx(good), direct_features(model, good, 64, 32, batch_size=4, flip=True))
    items = ImageItems(good, build_test_transform(64, 32))
    looped, ok = extract_from_dataset(fx.model, items, batch_size=4, flip=True, distributed=False, progress=False)
    assert ok.all() and torch.equal(looped, fx(good))
    features, ok = fx.extract([broken, *good], on_unreadable="skip")
    assert ok.tolist() == [False] + [True] * 9 and torch.equal(features[0], torch.zeros(512))
    with pytest.raises(DmireidError, match="c_broken.jpg"):
        fx([*good, broken])


# ------------------------------------------------------------------------------------ the commands
def test_extract_skip_unreadable(ckpt, crops, tmp_path, capsys):
    folder, good, broken = crops
    out = tmp_path / "f.npz"
    assert main(["extract", str(ckpt), str(folder), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dmireid: error: cannot read image") and broken in err and "\n" not in err
    assert not out.exists()
    assert main(["extract", str(ckpt), str(folder), "--out", str(out), "--quiet", "--skip-unreadable"]) == 0
    printed = capsys.readouterr().out
    assert "9 images x 512" in printed and f"skipped 1 unreadable image, the first {broken}" in printed
    with np.load(out, allow_pickle=False) as data:
        assert list(data["paths"]) == good and list(data["skipped"]) == [broken]
        np.testing.assert_allclose(data["features"], FeatureExtractor(ckpt, device="cpu")(good).numpy(), atol=1e-6)


def test_search_skip_unreadable(ckpt, crops, tmp_path, capsys):
    folder, good, broken = crops
    args = ["search", str(ckpt), "--query", good[0], broken, "--gallery", str(folder), "--topk", "20", "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert broken in err and "\n" not in err
    out = tmp_path / "r.csv"
    assert main([*args, "--skip-unreadable", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "skipped 2 unreadable images, the first" in printed and printed.count(broken) == 3  # the first, then query + gallery
    rows = list(csv.DictReader(open(out)))
    assert {r["query"] for r in rows} == {good[0]}
    assert sorted(r["gallery"] for r in rows) == good  # every readable gallery image, the broken one left out
    assert rows[0]["gallery"] == good[0] and float(rows[0]["distance"]) < 1e-5


def test_cluster_skip_unreadable(ckpt, crops, tmp_path, capsys):
    folder, good, broken = crops
    out = tmp_path / "groups"
    args = ["cluster", str(ckpt), str(folder), "--out", str(out), "--eps", "0.5", "--min-samples", "2", "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert broken in err and "\n" not in err and not (out / "clusters.csv").exists()
    assert main([*args, "--skip-unreadable"]) == 0
    printed = capsys.readouterr().out
    assert "9 images" in printed and f"skipped 1 unreadable image, the first {broken}" in printed
    assert str(out / "unreadable.txt") in printed
    assert (out / "unreadable.txt").read_text().splitlines() == [broken]
    rows = list(csv.DictReader(open(out / "clusters.csv")))
    assert sorted(r["path"] for r in rows) == good
    labels = {r["path"].rsplit("/", 1)[1]: int(r["cluster"]) for r in rows}
    for i in range(3):  # identical copies share a cluster
        group = {labels[f"img{i}_{c}.jpg"] for c in range(3)}
        assert len(group) == 1 and group.pop() >= 0
    # a later run without unreadable files removes the stale list
    shutil.copytree(folder, tmp_path / "clean", ignore=shutil.ignore_patterns("c_broken.jpg"))
    assert main(["cluster", str(ckpt), str(tmp_path / "clean"), "--out", str(out), "--eps", "0.5",
                 "--min-samples", "2", "--quiet", "--skip-unreadable"]) == 0
    assert not (out / "unreadable.txt").exists() and "skipped" not in capsys.readouterr().out


# ------------------------------------------------------------------------------------ AMP, devices
@pytest.mark.parametrize("bf16_capable, requested, expected", [
    (True, "bf16", torch.bfloat16),
    (True, "fp16", torch.float16),
    (False, "bf16", torch.float16),
    (False, "fp16", torch.float16),
])
def test_autocast_dtype_decision_table(monkeypatch, bf16_capable, requested, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_capable)
    cuda = torch.device("cuda")
    assert devices.autocast_dtype(cuda, True, requested) is expected
    assert devices.autocast_dtype("cuda:1", True, requested) is expected
    assert devices.autocast_dtype(cuda, False, requested) is None  # amp off
    assert devices.autocast_dtype(torch.device("cpu"), True, requested) is None  # CPU: fp32
    # the GradScaler follows the dtype: on exactly for fp16
    assert devices.needs_grad_scaler(expected) == (expected is torch.float16)
    assert devices.resolve_device("auto") == cuda


def test_autocast_and_devices_on_the_cpu(monkeypatch):
    assert not devices.needs_grad_scaler(None) and not devices.needs_grad_scaler(torch.bfloat16)
    assert isinstance(devices.autocast("cpu", None), contextlib.nullcontext)
    with pytest.raises(DmireidError, match="train.amp_dtype 'fp8' is not one of bf16, fp16"):
        devices.autocast_dtype("cpu", True, "fp8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.resolve_device(None) == torch.device("cpu")
    with pytest.raises(DmireidError, match="device=cuda:0 was asked for but no CUDA device"):
        devices.resolve_device("cuda:0")
    with pytest.raises(DmireidError, match="device=gpu0 is not a device name"):
        devices.resolve_device("gpu0")


# ------------------------------------------------------------------------------------ imports
def test_inference_imports_no_trainer():
    code = ("import sys, dmireid.inference\n"
            "assert not [m for m in sys.modules if m.startswith('dmireid.engine')]\n"
            "from dmireid.inference import FeatureExtractor\n"
            "import dmireid\n"
            "assert dmireid.FeatureExtractor is FeatureExtractor\n"
            "assert not [m for m in sys.modules if m.startswith('dmireid.engine')], 'engine loaded'\n"
            "from dmireid.engine import train, Trainer, Hook\n"
            "assert 'dmireid.engine.trainer' in sys.modules\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


# ------------------------------------------------------------------------------------ curves
def test_training_curves_plot_every_loss_key(tmp_path):
    records = [{"epoch": e, "loss": 3.0 - e, "loss_a": 2.0 - e, "loss_b": 1.0, "loss_mine": 0.5 + e,
                "num_clusters": 4} for e in range(3)]
    assert loss_keys([{"epoch": 0, "loss_b": 1.0, "skipped": True, "loss": 2.0}, {"loss_a": 0.1}]) == \
        ("loss", "loss_b", "loss_a")
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    pixels = np.asarray(Image.open(plot_training_curves(metrics, tmp_path / "c.png")).convert("RGB")).reshape(-1, 3)
    # the loss panel draws four lines (C0..C3); the pseudo-label panel one (C0); C3 = the fourth loss key
    assert (pixels == (214, 39, 40)).all(axis=1).sum() > 30


# ------------------------------------------------------------------------------------ torchrun
SHARD_DRIVER = """
import sys
import torch
from dmireid import distributed as dist
from dmireid.embedding.checkpoint import load_checkpoint
from dmireid.config import load_config
from dmireid import build
from dmireid.embedding import extract_features

torch.set_num_threads(1)
dist.init_distributed(torch.device("cpu"))
model = build.model(load_config("smoke"))
model.load_state_dict(load_checkpoint(sys.argv[1])["model"])
paths = sys.argv[3:]
features, ok = extract_features(model, [(p, 0, 0) for p in paths], 64, 32, batch_size=3, num_workers=0,
                               progress=False)
if dist.is_main():
    torch.save({"features": features, "ok": torch.from_numpy(ok), "world": dist.world_size()}, sys.argv[2])
dist.cleanup()
"""


def test_torchrun_shards_and_gathers_like_one_process(ckpt, crops, model, tmp_path):
    _, good, broken = crops
    paths = good[:5] + [broken] + good[5:]  # 10 images: 5 per rank, the unreadable one on rank 1
    driver = tmp_path / "driver.py"
    driver.write_text(SHARD_DRIVER)
    env = {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
           "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    out = tmp_path / "ddp.pt"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
                           str(driver), str(ckpt), str(out), *paths], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = torch.load(out, weights_only=True)
    assert got["world"] == 2
    single, ok = extract_features(model, [(p, 0, 0) for p in paths], 64, 32, batch_size=3, num_workers=0, progress=False)
    assert got["ok"].tolist() == ok.tolist() == [True] * 5 + [False] + [True] * 4
    torch.testing.assert_close(got["features"], single, atol=1e-6, rtol=0)
