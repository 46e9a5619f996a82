"""Batched feature extraction with the test transform (eval mode, no grad)."""

from __future__ import annotations

import contextlib
import logging
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from ..data import ImageDataset, Sample, build_test_transform
from .. import distributed as dist

log = logging.getLogger(__name__)


def autocast_for(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA when ``enabled`` (fp32 elsewhere)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def extract_features(
    model: torch.nn.Module,
    samples: Sequence[Sample],
    height: int,
    width: int,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
    amp: bool = False,
    channels_last: bool = False,
    progress: bool = True,
    description: str = "extract",
) -> tuple[torch.Tensor, np.ndarray]:
    """Embed ``samples`` with ``model`` in eval mode.

    Returns ``(features N×d float32 on CPU, L2-normalised, ok: bool N)``; ``ok[i]`` is False for
    an unreadable image (its feature row is zero). Under torchrun each rank embeds a contiguous
    shard and the shards are all-gathered, so every rank returns all N rows.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    dataset = ImageDataset(list(samples), build_test_transform(height, width))
    n, world, rank = len(dataset), dist.world_size(), dist.rank()
    shard = np.array_split(np.arange(n), world)[rank]
    loader = DataLoader(Subset(dataset, shard.tolist()), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, pin_memory=device.type == "cuda")
    feats, oks = [], []
    bar = tqdm(loader, desc=description, unit="batch", disable=not progress or not dist.is_main(), leave=False)
    for images, _, ok in bar:
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast_for(device, amp):
            out = model(images)
        feats.append(torch.nn.functional.normalize(out.float(), dim=1))
        oks.append(ok.to(device))
    dim = getattr(model, "feature_dim", None) or (feats[0].shape[1] if feats else 0)
    local = torch.cat(feats) if feats else torch.zeros((0, dim), device=device)
    local_ok = torch.cat(oks) if oks else torch.zeros(0, dtype=torch.bool, device=device)
    features = dist.all_gather_uneven(local).cpu()
    ok_mask = dist.all_gather_uneven(local_ok).cpu().numpy().astype(bool)
    features[~torch.from_numpy(ok_mask)] = 0
    model.train(was_training)
    return features, ok_mask
