"""Shared by the tracking tests: a tiny random-weight checkpoint (smoke preset, 64×32) and a short
synthetic two-camera clip written as MOTChallenge sequences."""

import pytest
import torch

from dmireid import build
from dmireid.embedding.checkpoint import save_checkpoint
from dmireid.config import load_config
from dmireid.data.synthetic_video import render_clip, write_clip
from model_fixtures import randomise_bn


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    cfg = load_config("smoke")
    torch.manual_seed(0)
    online = randomise_bn(build.model(cfg), 1).eval()
    path = tmp_path_factory.mktemp("ckpt") / "last.pt"
    save_checkpoint({"config": cfg.to_dict(), "epoch": 1, "model": online.state_dict(), "ema_model": None}, path)
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """{camera: (Clip, folder)} of one 30-frame scene seen by cameras 1 and 2."""
    root = tmp_path_factory.mktemp("clips")
    out = {}
    for camera in (1, 2):
        clip = render_clip(site_seed=0, scene_seed=1, camera=camera, frames=30, people=5)
        out[camera] = (clip, write_clip(clip, root / f"c{camera}"))
    return out
