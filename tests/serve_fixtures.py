"""Shared by the serve tests: a cheap checkpoint and a real gallery index of synthetic people."""

from pathlib import Path

import torch
from PIL import Image

from dmireid.embedding.checkpoint import save_checkpoint
from dmireid.config import load_config
from dmireid.data import build_test_transform
from dmireid import build
from dmireid.inference import GalleryIndex


def make_checkpoint(path: Path, images, seed: int = 0) -> Path:
    """A random-weight smoke model (ResNet-18 at 64×32) whose BatchNorm statistics are those of
    ``images`` (one forward pass, no training): untrained, but its distances spread over [0, 2]."""
    cfg = load_config("smoke")
    torch.manual_seed(seed)
    model = build.model(cfg, for_inference=True)
    transform = build_test_transform(cfg.data.height, cfg.data.width)
    batch = torch.stack([transform(Image.open(p).convert("RGB")) for p in images])
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # a plain average over the batch
    with torch.no_grad():
        model.train()(batch)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint({"config": cfg.to_dict(), "epoch": 0, "model": model.eval().state_dict(), "ema_model": None},
                    path)
    return path


def build_gallery(out: Path, paths, checkpoint: Path) -> GalleryIndex:
    """A new exact index of ``paths`` in ``out``, on the CPU."""
    return GalleryIndex.build(checkpoint, [str(p) for p in paths], out, device="cpu")
