"""Label-free corrections of the cold start (issue 23, point 5), measured by benchmarks/bench_cold_start.py.

    feats = camera_bn_features(model, samples, 64, 32)       # N×d, BN statistics per camera
    feats = camera_centred_features(feats, cameras)          # N×d, each camera's mean removed

``camera_bn_features``: "camera-based BatchNorm": a copy of the model whose BatchNorm running
statistics are re-estimated on each camera's images (cumulative average over one pass, in train
mode, no gradient), then each camera's images embedded in eval mode with its own statistics.
``camera_centred_features``: each camera's mean feature subtracted, rows renormalised.
"""

from __future__ import annotations

import copy
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ..data import ImageDataset, Sample, build_test_transform


def camera_centred_features(features: torch.Tensor, cameras: np.ndarray) -> torch.Tensor:
    """N×d unit rows -> N×d unit rows with the mean row of each camera removed."""
    features = torch.as_tensor(features).float()
    out = features.clone()
    for camera in np.unique(cameras):
        rows = torch.from_numpy(np.flatnonzero(np.asarray(cameras) == camera))
        out[rows] -= features[rows].mean(0, keepdim=True)
    return F.normalize(out, dim=1)


def _batches(samples: Sequence[Sample], height: int, width: int, batch_size: int):
    dataset = ImageDataset(list(samples), build_test_transform(height, width))
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)


@torch.no_grad()
def camera_bn_features(model: torch.nn.Module, samples: Sequence[Sample], height: int, width: int,
                       batch_size: int = 128, device: torch.device | str = "cpu") -> torch.Tensor:
    """N×d unit rows of ``samples`` embedded with BatchNorm statistics of their own camera."""
    work = copy.deepcopy(model).to(device)
    norms = [m for m in work.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    cameras = np.array([camid for _, _, camid in samples])
    out = None
    for camera in np.unique(cameras):
        rows = np.flatnonzero(cameras == camera)
        part = [samples[i] for i in rows]
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # cumulative average over the pass
        work.train()
        for images, _, _ in _batches(part, height, width, batch_size):
            work(images.to(device))
        work.eval()
        feats = torch.cat([work(images.to(device)).float().cpu() for images, _, _ in
                           _batches(part, height, width, batch_size)])
        if out is None:
            out = torch.zeros(len(samples), feats.shape[1])
        out[torch.from_numpy(rows)] = F.normalize(feats, dim=1)
    return out
