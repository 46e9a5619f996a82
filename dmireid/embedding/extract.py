"""The one feature-extraction loop (eval mode, no grad, unit rows) for training, evaluation and inference.

    features, ok = extract_features(model, dataset.train, 256, 128, batch_size=128, device="cuda")
    features, ok = extract_from_dataset(model, items, batch_size=64, device="cpu", on_unreadable="stop")

:func:`extract_from_dataset` is the loop: any dataset of ``(3×H×W image, index, ok)`` items,
sharded over torchrun ranks and all-gathered when ``distributed``; :func:`extract_features` runs it
on ``(path, pid, camid)`` samples with the test transform (what training and evaluation call).
:class:`~dmireid.inference.FeatureExtractor` is the other way in: it loads a checkpoint and runs the
same loop on paths, PIL images, arrays or tensors.

Unreadable images (``on_unreadable``): ``"skip"`` gives their rows as zeros with ``ok=False`` (the
caller decides: training leaves them out of the pseudo-labels, ``--skip-unreadable`` drops and lists
them); ``"stop"`` raises a one-line :class:`~dmireid.errors.DmireidError` naming the first one.
"""

from __future__ import annotations

import logging
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset

from .. import distributed as dist
from ..data import ImageDataset, Sample, build_test_transform
from ..devices import autocast, autocast_dtype
from ..errors import DmireidError
from ..progress import progress_bar
from .inputs import describe_unreadable

log = logging.getLogger(__name__)

ON_UNREADABLE = ("stop", "skip")


def check_policy(on_unreadable: str) -> str:
    if on_unreadable not in ON_UNREADABLE:
        raise DmireidError(f"on_unreadable {on_unreadable!r} is not one of {', '.join(ON_UNREADABLE)}")
    return on_unreadable


def resolve_amp(device: torch.device, amp: bool | torch.dtype | None) -> torch.dtype | None:
    """``amp``: a dtype (used as is on CUDA), True (:func:`~dmireid.devices.autocast_dtype`), False/None."""
    if isinstance(amp, torch.dtype):
        return amp if device.type == "cuda" else None
    return autocast_dtype(device, bool(amp))


@torch.no_grad()
def embed_batch(model: torch.nn.Module, images: torch.Tensor, device: torch.device,
                dtype: torch.dtype | None = None, channels_last: bool = False, flip: bool = False) -> torch.Tensor:
    """A preprocessed B×3×H×W batch -> B×d float32 unit rows on ``device``.

    ``flip``: the normalised mean of the features of each image and its mirror image. The model's
    mode is the caller's (the loop puts it in eval mode).
    """
    images = images.to(device, dtype=torch.float32, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    with autocast(device, dtype):
        out = model(images)
    features = F.normalize(out.float(), dim=1)
    if flip:
        with autocast(device, dtype):
            out = model(torch.flip(images, dims=[3]))
        features = F.normalize(features + F.normalize(out.float(), dim=1), dim=1)
    return features


def _stop(ok: torch.Tensor, index: torch.Tensor, describe: Callable[[int], str]) -> None:
    first = int(index[~ok][0])
    raise DmireidError(f"cannot read image {describe(first)}; --skip-unreadable (on_unreadable='skip' in Python) "
                       f"leaves such images out")


@torch.no_grad()
def extract_from_dataset(
    model: torch.nn.Module,
    dataset: Dataset,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
    amp: bool | torch.dtype | None = False,
    channels_last: bool = False,
    flip: bool = False,
    on_unreadable: str = "skip",
    distributed: bool = True,
    progress: bool = True,
    description: str = "extract",
    describe: Callable[[int], str] | None = None,
    pin_memory: bool | None = None,
) -> tuple[torch.Tensor, np.ndarray]:
    """Embed every item of ``dataset`` (``(3×H×W image, index, ok)``) with ``model`` in eval mode.

    Returns ``(features N×d float32 on CPU with unit rows, ok: bool N)``; an unreadable item's row
    is zero. ``amp``: see :func:`resolve_amp`. ``distributed``: under torchrun each rank embeds a
    contiguous shard and the shards are all-gathered, so every rank returns all N rows (every rank
    must call it then). ``describe(index)`` names an item in the ``"stop"`` error (default: its
    dataset's ``describe`` method, else ``item <index>``). The model's train/eval mode is restored.
    """
    check_policy(on_unreadable)
    device = torch.device(device)
    dtype = resolve_amp(device, amp)
    describe = describe or getattr(dataset, "describe", None) or (lambda i: f"item {i}")
    world, rank = (dist.world_size(), dist.rank()) if distributed else (1, 0)
    n = len(dataset)
    shard = np.array_split(np.arange(n), world)[rank]
    loader = DataLoader(Subset(dataset, shard.tolist()), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, pin_memory=device.type == "cuda" if pin_memory is None else pin_memory)
    was_training = model.training
    model.eval()
    feats, oks = [], []
    try:
        with progress_bar(total=len(shard), desc=description, unit="img", leave=False,
                          enabled=progress and (not distributed or dist.is_main())) as bar:
            for images, index, ok in loader:
                if on_unreadable == "stop" and world == 1 and not bool(ok.all()):
                    _stop(ok, index, describe)  # early: no need to embed the rest
                feats.append(embed_batch(model, images, device, dtype, channels_last, flip))
                oks.append(ok.to(device))
                bar.update(len(index))
    finally:
        model.train(was_training)
    dim = getattr(model, "feature_dim", None) or (feats[0].shape[1] if feats else 0)
    local = torch.cat(feats) if feats else torch.zeros((0, dim), device=device)
    local_ok = torch.cat(oks) if oks else torch.zeros(0, dtype=torch.bool, device=device)
    if world > 1:
        local, local_ok = dist.all_gather_uneven(local), dist.all_gather_uneven(local_ok)
    features = local.cpu()
    ok_mask = local_ok.cpu().numpy().astype(bool)
    if on_unreadable == "stop" and not ok_mask.all():  # every rank sees the gathered mask: all raise
        _stop(torch.from_numpy(ok_mask), torch.arange(n), describe)
    features[~torch.from_numpy(ok_mask)] = 0
    return features, ok_mask


def extract_features(
    model: torch.nn.Module,
    samples: Sequence[Sample],
    height: int,
    width: int,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
    num_workers: int = 4,
    amp: bool | torch.dtype | None = False,
    channels_last: bool = False,
    progress: bool = True,
    description: str = "extract",
    on_unreadable: str = "skip",
) -> tuple[torch.Tensor, np.ndarray]:
    """Embed ``(path, pid, camid)`` samples with ``model`` (test transform, eval mode): the loop of
    training (pseudo-labels, θ' instances) and evaluation.

    Returns ``(features N×d float32 on CPU, L2-normalised, ok: bool N)``; ``ok[i]`` is False for
    an unreadable image (its feature row is zero) unless ``on_unreadable="stop"`` raises instead.
    Under torchrun each rank embeds a contiguous shard and the shards are all-gathered, so every
    rank returns all N rows.
    """
    dataset = ImageDataset(list(samples), build_test_transform(height, width))
    return extract_from_dataset(model, dataset, batch_size, device, num_workers, amp=amp,
                                channels_last=channels_last, on_unreadable=on_unreadable, distributed=True,
                                progress=progress, description=description,
                                describe=lambda i: describe_unreadable(dataset.samples[i][0], i))
