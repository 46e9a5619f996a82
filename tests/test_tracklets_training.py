"""Tracklets in training (issue 23): the camera-local mask by hand, and smoke runs with the options off/on."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dmireid.memory import ClusterProxies, DiscrepantProxies, MultiInstanceProxies
from dmireid.objectives.camera_local import CameraLocalMask


def test_mask_by_hand():
    # cluster 0 spans cameras 0 and 1; cluster 1 only camera 0; cluster 2 only camera 1
    mask = CameraLocalMask.from_labels(torch.tensor([0, 0, 1, 2, 2, -1]), torch.tensor([0, 1, 0, 1, 1, 0]))
    allowed = mask.allowed(torch.tensor([0, 1, 2, 0, -1]), torch.tensor([0, 0, 1, 1, 0]))
    assert allowed.tolist() == [[True, True, False],   # multi, camera 0: not cluster 2 (only camera 1)
                                [True, True, False],   # single-camera 1 in camera 0: its camera only
                                [True, False, True],   # single-camera 2 in camera 1
                                [True, False, True],   # multi, camera 1: not cluster 1
                                [True, True, False]]   # an outlier row (ignored by the losses)


def test_masked_losses_equal_the_loss_over_the_allowed_proxies():
    gen = torch.Generator().manual_seed(0)
    proxies = F.normalize(torch.randn(3, 4, generator=gen), dim=1)
    f = F.normalize(torch.randn(2, 4, generator=gen), dim=1)
    y = torch.tensor([1, 0])
    allowed = torch.tensor([[True, True, False], [True, False, True]])
    memory = ClusterProxies(proxies.clone(), temperature=0.1)
    logits = f @ proxies.t() / 0.1
    reference = torch.stack([F.cross_entropy(logits[0, [0, 1]][None], torch.tensor([1])),
                             F.cross_entropy(logits[1, [0, 2]][None], torch.tensor([0]))]).mean()
    torch.testing.assert_close(memory.loss(f, y, allowed), reference)
    torch.testing.assert_close(memory.loss(f, y), F.cross_entropy(logits, y))  # no mask: unchanged
    dcp = DiscrepantProxies(proxies.clone(), updates=("mean",), temperature=0.1, margins=(0.0,))
    torch.testing.assert_close(dcp.loss(f, y, allowed), reference)
    instances = proxies[:, None, :].repeat(1, 2, 1)  # K=2 identical slots: the same logits
    mip = MultiInstanceProxies(instances, temperature=0.1)
    torch.testing.assert_close(mip.loss(f, y, allowed), reference)


def smoke(tmp_path, name, *overrides):
    from dmireid.config import load_config
    from dmireid.data import make_synthetic
    from dmireid.engine import train

    data = tmp_path / "synth"
    if not data.exists():
        make_synthetic(data, num_ids=24, num_cameras=3, height=64, width=32)
    cfg = load_config("smoke", [f"output_dir={tmp_path / name}", "data.name=market1501", f"data.root={data}",
                                "train.epochs=1", "train.iters=2", *overrides])
    train(cfg, progress=False)
    return [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]


def without_times(records):
    return [{k: v for k, v in r.items() if not k.startswith("time") and k != "images_per_s"} for r in records]


def test_options_off_leave_every_metric_unchanged(tmp_path):
    torch.set_num_threads(1)
    plain = smoke(tmp_path, "plain")
    with_data = smoke(tmp_path, "data", "data.options.tracklets=identity_camera")
    assert without_times(plain) == without_times(with_data)
    assert "tracklets" not in plain[-1]


def test_tracklet_training_runs_and_records_what_it_did(tmp_path):
    torch.set_num_threads(1)
    records = smoke(tmp_path, "tracklets", "data.options.tracklets=identity_camera", "pseudo_labels.tracklets=true",
                    "memory.single_camera_clusters=own_camera", "memory.camera_proxies=true",
                    "pseudo_labels.camera_balance=true")
    last = records[-1]
    assert last["tracklets"] > 0 and last["num_outliers"] == 0  # noise=own: every tracklet trains
    assert np.isfinite(last["loss"]) and "mAP" in last


def test_tracklets_on_without_dataset_tracklets_is_one_line_error(tmp_path):
    from dmireid.errors import DmireidError

    with pytest.raises(DmireidError, match="needs a dataset with tracklets"):
        smoke(tmp_path, "none", "pseudo_labels.tracklets=true")
